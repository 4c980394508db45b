"""The OpenAPI 3.1 description of everything under /api/v1, served at /api/v1/openapi.json.

The operations are written here; every body they carry is a shape of schemas.py, and
components.schemas is generated from those shapes (requests as validated, answers as
serialised), so the document cannot say one thing while the views check or answer another.
Tests check that every /api/v1 route is here with the role its view declares, and schemathesis
checks the app's answers against the document.
"""

from __future__ import annotations

from pydantic import TypeAdapter
from pydantic.json_schema import GenerateJsonSchema

from ...models import Role, SubscriberStatus
from . import schemas
from .limits import DEFAULT_PAGE, MAX_ARTICLES, MAX_BODY_BYTES, MAX_DIGEST_ARTICLES, MAX_EMAIL_LENGTH, MAX_ID, MAX_PAGE

SCHEMAS = "#/components/schemas/"
TOO_LARGE = ("The body is larger than this route reads (MAX_CONTENT_LENGTH, 1 MiB unless the operator set it "
             "otherwise). Nothing was changed.")
ERROR_RESPONSES = {
    "400": "BadRequest", "401": "Unauthorized", "403": "Forbidden", "404": "NotFound", "409": "Conflict",
    "500": "InternalError",
}


class _ComponentSchemas(GenerateJsonSchema):
    """Pydantic's JSON Schema (2020-12, what OpenAPI 3.1 uses) without what adds nothing to a
    reader: titles that repeat the names, and `null` defaults that stand for "not given"."""

    def field_title_should_be_set(self, schema) -> bool:
        return False

    def default_schema(self, schema):
        json_schema = super().default_schema(schema)
        if "default" in json_schema and json_schema["default"] is None:
            del json_schema["default"]
        return json_schema


def component_schemas() -> dict:
    """Every shape of schemas.py (and the enums they use), by name."""
    shapes = [(shape, "validation") for shape in schemas.REQUESTS] + [(shape, "serialization")
                                                                       for shape in schemas.ANSWERS]
    generator = _ComponentSchemas(ref_template=SCHEMAS + "{model}", union_format="primitive_type_array")
    _, definitions = generator.generate_definitions(
        [(shape, mode, TypeAdapter(shape).core_schema) for shape, mode in shapes])
    for definition in definitions.values():
        definition.pop("title", None)
    return definitions


def _ref(shape) -> dict:
    return {"$ref": SCHEMAS + shape.__name__}


def _json(schema: dict) -> dict:
    return {"content": {"application/json": {"schema": schema}}}


def _answer(description: str, schema: dict | None = None, headers: dict | None = None) -> dict:
    answer = {"description": description, **(_json(schema) if schema else {})}
    if headers:
        answer["headers"] = headers
    return answer


def _operation(operation_id: str, tag: str, summary: str, role: Role | None, answers: dict, *,
               errors: tuple[str, ...] = (), body: dict | None = None, body_required: bool = True,
               parameters: tuple[dict, ...] = (), description: str | None = None) -> dict:
    """`role` None is public; otherwise the bearer token's operator needs at least that role."""
    responses = dict(answers)
    codes = errors + (() if role is None else ("401", "403")) + ("500",)
    for code in sorted(set(codes)):
        responses[code] = {"$ref": f"#/components/responses/{ERROR_RESPONSES[code]}"}
    if body is not None and "413" not in responses:
        responses["413"] = _answer(TOO_LARGE, _ref(schemas.Error))
    who = "Public: no token needed." if role is None else f"Needs an API token of a {role.value} (or higher role)."
    operation = {
        "operationId": operation_id,
        "tags": [tag],
        "summary": summary,
        "description": f"{description}\n\n{who}" if description else who,
        "x-required-role": role.value if role else None,
        "responses": responses,
    }
    if role is None:
        operation["security"] = []
    if parameters:
        operation["parameters"] = list(parameters)
    if body is not None:
        operation["requestBody"] = {"required": body_required, **_json(body)}
    return operation


def _id_parameter(name: str, what: str) -> dict:
    return {"name": name, "in": "path", "required": True, "description": f"The {what}'s id.",
            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_ID}}


def _page_parameters(after_what: str) -> tuple[dict, ...]:
    return (
        {"name": "limit", "in": "query", "description": f"Items per page (default {DEFAULT_PAGE}).",
         "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE}},
        {"name": "after_id", "in": "query",
         "description": f"Keyset pagination: the `next_after_id` of the previous page; {after_what}.",
         "schema": {"type": "integer", "minimum": 1, "maximum": MAX_ID}},
    )


LOCATION = {"Location": {"required": True, "description": "Where the new resource is.", "schema": {"type": "string"}}}


def _responses() -> dict:
    error = _ref(schemas.Error)
    return {
        "BadRequest": _answer("Bad input; `field` names it. Nothing was changed.", error),
        "Unauthorized": _answer(
            "No token, or an unknown or revoked one.", error,
            {"WWW-Authenticate": {"required": True, "schema": {"type": "string"}}}),
        "Forbidden": _answer("The token's operator has a role that may not do this.", error),
        "NotFound": _answer("No such id.", error),
        "Conflict": _answer("Not possible in the current state; the message says why.", error),
        "InternalError": _answer("Something failed on our side; what the request had not yet saved was "
                                 "rolled back. Try again later.", error),
    }


def _paths() -> dict:
    subscriber_id = _id_parameter("subscriber_id", "subscriber")
    digest_id = _id_parameter("digest_id", "digest")
    status_answer = _answer("The digest's delivery status.", _ref(schemas.DeliveryStatus))

    def control(verb: str, summary: str, description: str) -> dict:
        return {"post": _operation(f"{verb}Digest", "digests", summary, Role.EDITOR, {"200": status_answer},
                                   errors=("404", "409"), parameters=(digest_id,), description=description)}

    return {
        "/api/v1/openapi.json": {"get": _operation(
            "getOpenApi", "meta", "This document", None, {"200": _answer("OpenAPI 3.1", {"type": "object"})})},
        "/api/v1/subscribe": {
            "post": _operation(
                "subscribe", "signup", "Sign up (the site's own forms and the embed script)", None,
                {"202": _answer("Accepted; the same answer for new, pending and confirmed addresses.",
                                _ref(schemas.SignupAccepted)),
                 "429": _answer("Too many signups from this address.", _ref(schemas.Error))},
                errors=("400",), body=_ref(schemas.Signup),
                description="Starts double opt-in: a confirmation email goes out. Rate-limited per IP. "
                            "Answers CORS for EMBED_ALLOWED_ORIGINS."),
            "options": _operation("subscribePreflight", "signup", "CORS preflight", None,
                                  {"204": {"description": "Preflight answered."}}),
        },
        "/api/v1/subscribers": {
            "get": _operation(
                "listSubscribers", "subscribers", "List subscribers, oldest first", Role.VIEWER,
                {"200": _answer("A page of subscribers.", _ref(schemas.SubscriberPage))},
                errors=("400",),
                parameters=(
                    {"name": "status", "in": "query", "description": "Only subscribers in this status.",
                     "schema": _ref(SubscriberStatus)},
                    {"name": "email", "in": "query", "description": "Only addresses containing this text.",
                     "schema": {"type": "string", "maxLength": MAX_EMAIL_LENGTH}},
                    *_page_parameters("the page goes on after that subscriber"),
                )),
            "post": _operation(
                "createSubscriber", "subscribers", "Add a subscriber who gave their consent", Role.ADMIN,
                {"201": _answer("A new subscriber, pending: the confirmation email is on its way.",
                                _ref(schemas.SubscriberCreated), LOCATION),
                 "202": _answer("A known address: consent recorded, double opt-in (re)started.",
                                _ref(schemas.SubscriberCreated)),
                 "200": _answer("A known address that is confirmed, bounced or complained: nothing changed.",
                                _ref(schemas.SubscriberCreated))},
                errors=("400", "409"), body=_ref(schemas.NewSubscriber),
                description="Records a `requested` consent event (the current terms, this request's IP and "
                            "user agent, source 'api-operator: <consent_source>') and starts double opt-in "
                            "exactly like the signup form. 409: the address is on the suppression list."),
        },
        "/api/v1/subscribers/{subscriber_id}": {
            "get": _operation("getSubscriber", "subscribers", "A subscriber and their consent record", Role.VIEWER,
                              {"200": _answer("The subscriber.", _ref(schemas.SubscriberWithConsent))},
                              errors=("404",), parameters=(subscriber_id,)),
            "delete": _operation(
                "eraseSubscriber", "subscribers", "Erase a person (GDPR Art. 17)", Role.ADMIN,
                {"204": {"description": "Erased."}}, errors=("404",), parameters=(subscriber_id,),
                description="Deletes the subscriber, their consent events, emails and deliveries, and the address "
                            "from the audit log. It is kept only as a keyed hash on the suppression list, so it is "
                            "never mailed again."),
        },
        "/api/v1/articles": {
            "get": _operation(
                "listArticles", "articles", "List articles, newest first", Role.VIEWER,
                {"200": _answer("A page of articles.", _ref(schemas.ArticlePage))},
                errors=("400",), parameters=_page_parameters("the page goes on after that article")),
            "post": _operation(
                "importArticles", "articles", "Add or update articles", Role.EDITOR,
                {"201": _answer("Imported; at least one article was new.", _ref(schemas.ImportReport)),
                 "200": _answer("Imported; none was new.", _ref(schemas.ImportReport)),
                 "400": _answer("Not JSON, or no valid article (then with the report: `errors` names the bad "
                                "ones). Nothing was changed.", _ref(schemas.ImportRefused)),
                 "413": _answer(f"Too large: at most {MAX_ARTICLES} articles or "
                                f"{MAX_BODY_BYTES // 2**20} MiB per request.", _ref(schemas.Error))},
                body={"oneOf": [_ref(schemas.ArticleIn),
                                {"type": "array", "items": _ref(schemas.ArticleIn), "maxItems": MAX_ARTICLES}]},
                description="One article object or an array of them. An article is known by its URL: sending "
                            "it again changes nothing, a changed one is updated. Also accepts the site-wide "
                            "API_TOKEN setting as the bearer token."),
        },
        "/api/v1/digests": {"post": _operation(
            "createDigest", "digests", "Compose a draft digest", Role.EDITOR,
            {"201": _answer("The draft.", _ref(schemas.Digest), LOCATION)},
            errors=("400", "409"), body=_ref(schemas.NewDigest), body_required=False,
            description="Takes the visible articles no digest that went out carried (or, with `since`, those "
                        f"published since then), newest first, at most {MAX_DIGEST_ARTICLES}. 409 when there is "
                        "none: nothing new to send is a state of the site, not bad input; try again once articles "
                        "arrive.")},
        "/api/v1/digests/{digest_id}": {"get": _operation(
            "getDigest", "digests", "A digest and its articles", Role.VIEWER,
            {"200": _answer("The digest.", _ref(schemas.Digest))}, errors=("404",), parameters=(digest_id,))},
        "/api/v1/digests/{digest_id}/status": {"get": _operation(
            "getDigestStatus", "digests", "Delivery progress", Role.VIEWER, {"200": status_answer},
            errors=("404",), parameters=(digest_id,))},
        "/api/v1/digests/{digest_id}/send": {"post": _operation(
            "sendDigest", "digests", "Send a draft to every confirmed subscriber", Role.EDITOR,
            {"202": _answer("Sending has started.", _ref(schemas.DeliveryStatus))}, errors=("400", "404", "409"),
            parameters=(digest_id,),
            description="Each confirmed subscriber gets it exactly once. 409 unless the digest is a draft. 400 "
                        "(field MAIL_POSTAL_ADDRESS) while the postal address is the placeholder, outside debug.")},
        "/api/v1/digests/{digest_id}/pause": control(
            "pause", "Pause sending", "Workers stop after the batch in hand. 409 unless sending."),
        "/api/v1/digests/{digest_id}/resume": control(
            "resume", "Resume sending", "Sends what is still open. 409 unless paused."),
        "/api/v1/digests/{digest_id}/cancel": control(
            "cancel", "Cancel", "What was not sent is skipped. 409 when done or cancelled already."),
    }


def openapi_document() -> dict:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Newsletter API",
            "version": "1.0.0",
            "description": "Subscribers, articles and digests for the site's own systems. Send "
                           "`Authorization: Bearer <API token>`; an operator creates tokens in the console. "
                           "Roles: viewer reads; editor also manages articles and digests and sends; admin "
                           "also manages subscribers' data. Every error is JSON: {\"error\", \"field\"?}.",
        },
        "tags": [{"name": name} for name in ("subscribers", "articles", "digests", "signup", "meta")],
        "security": [{"bearerToken": []}],
        "paths": _paths(),
        "components": {
            "securitySchemes": {"bearerToken": {"type": "http", "scheme": "bearer",
                                                "description": "A per-operator API token (nlt_...)."}},
            "schemas": component_schemas(),
            "responses": _responses(),
        },
    }
