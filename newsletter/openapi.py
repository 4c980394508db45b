"""The OpenAPI 3.1 description of everything under /api/v1, served at /api/v1/openapi.json.

Kept beside the views it describes: tests check that every /api/v1 route is here with the role
its view declares, and schemathesis checks the answers against these schemas.
"""

from __future__ import annotations

from .models import ConsentKind, DigestStatus, Role, SubscriberStatus
from .services import digests
from .validation import MAX_EMAIL_LENGTH, MAX_NAME_LENGTH
from .views import articles_api

# The limits the views enforce, here so that the document states exactly them.
MAX_ID = 2**31 - 1  # ids are INTEGER columns; a larger one names nothing (and SQLite cannot bind past 2**63)
DEFAULT_PAGE = 100
MAX_PAGE = 500
MAX_CONSENT_SOURCE = 200
ERROR_RESPONSES = {
    "400": "BadRequest", "401": "Unauthorized", "403": "Forbidden", "404": "NotFound", "409": "Conflict",
}


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: dict) -> dict:
    return {**schema, "type": [schema["type"], "null"]}


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
    codes = errors + (() if role is None else ("401", "403"))
    for code in sorted(set(codes)):
        responses[code] = {"$ref": f"#/components/responses/{ERROR_RESPONSES[code]}"}
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


def _page_of(item: str) -> dict:
    return {
        "type": "object",
        "required": ["items", "next_after_id"],
        "properties": {
            "items": {"type": "array", "items": _ref(item)},
            "next_after_id": {"type": ["integer", "null"],
                              "description": "Pass as after_id for the next page; null on the last page."},
        },
    }


TIME = {"type": "string", "format": "date-time"}
LOCATION = {"Location": {"required": True, "description": "Where the new resource is.", "schema": {"type": "string"}}}
TEXT = {"type": "string"}


def _schemas() -> dict:
    subscriber_properties = {
        "id": {"type": "integer"},
        "email": TEXT,
        "name": _nullable(TEXT),
        "status": {"type": "string", "enum": [s.value for s in SubscriberStatus]},
        "created_at": TIME,
        "confirmed_at": _nullable(TIME),
        "unsubscribed_at": _nullable(TIME),
    }
    article_in = {
        "url": {"type": "string", "description": "Absolute http(s) URL; identifies the article."},
        "title": {"type": "string", "description": "Plain text (tags are removed)."},
        "summary": _nullable({"type": "string", "description": "HTML; sanitised to a small safe subset."}),
        "author": _nullable(TEXT),
        "image_url": _nullable({"type": "string", "description": "Absolute http(s) URL."}),
        "published_at": _nullable({"type": "string", "description": "ISO 8601; without an offset, UTC."}),
    }
    report = {
        "created": {"type": "integer"}, "updated": {"type": "integer"}, "unchanged": {"type": "integer"},
        "errors": {"type": "array", "items": {
            "type": "object", "required": ["index", "error"],
            "properties": {"index": {"type": "integer", "description": "Position in the array sent."},
                           "error": TEXT}}},
    }
    return {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": {"type": "string", "description": "What went wrong, for people."},
                           "field": {"type": "string", "description": "The input at fault, when one is."}},
        },
        "Subscriber": {"type": "object", "required": list(subscriber_properties),
                       "properties": subscriber_properties},
        "ConsentEvent": {
            "type": "object",
            "required": ["kind", "at", "ip", "user_agent", "source", "terms_version", "terms_sha256", "checkbox_value"],
            "properties": {
                "kind": {"type": "string", "enum": [k.value for k in ConsentKind]},
                "at": TIME,
                "ip": _nullable(TEXT),
                "user_agent": _nullable(TEXT),
                "source": _nullable(TEXT),
                "terms_version": {"type": ["integer", "null"]},
                "terms_sha256": _nullable(TEXT),
                "checkbox_value": _nullable({"type": "string", "description": "The raw consent value sent."}),
            },
        },
        "SubscriberWithConsent": {
            "type": "object",
            "required": [*subscriber_properties, "consent_events"],
            "properties": {**subscriber_properties,
                           "consent_events": {"type": "array", "items": _ref("ConsentEvent"),
                                              "description": "The consent ledger, oldest first."}},
        },
        "SubscriberPage": _page_of("Subscriber"),
        "NewSubscriber": {
            "type": "object",
            "required": ["email", "consent", "consent_source"],
            "examples": [{"email": "ada@example.com", "name": "Ada Lovelace", "consent": True,
                          "consent_source": "paper form at the 2026 book fair"}],
            "properties": {
                "email": {"type": "string", "format": "email", "maxLength": MAX_EMAIL_LENGTH},
                "name": {"type": ["string", "null"], "maxLength": MAX_NAME_LENGTH},
                "consent": {"type": "boolean",
                            "description": "Must be true: the person's own yes. Anything else is refused (400)."},
                "consent_source": {"type": "string", "minLength": 1, "maxLength": MAX_CONSENT_SOURCE,
                                   "description": "Where and how the consent was given; recorded as "
                                                  "'api-operator: <consent_source>'."},
            },
        },
        "SubscriberCreated": {
            "type": "object",
            "required": [*subscriber_properties, "message"],
            "properties": {**subscriber_properties, "message": TEXT},
        },
        "Article": {
            "type": "object",
            "required": ["id", "url", "title", "summary_html", "author", "image_url", "published_at",
                         "created_at", "updated_at", "source", "hidden"],
            "properties": {
                "id": {"type": "integer"}, "url": TEXT, "title": TEXT, "summary_html": TEXT,
                "author": _nullable(TEXT), "image_url": _nullable(TEXT), "published_at": _nullable(TIME),
                "created_at": TIME, "updated_at": TIME, "source": _nullable(TEXT),
                "hidden": {"type": "boolean", "description": "Hidden articles go into no digest."},
            },
        },
        "ArticlePage": _page_of("Article"),
        "ArticleIn": {"type": "object", "required": ["url", "title"], "properties": article_in,
                      "examples": [{"url": "https://news.example.org/2026/11/harbour", "title": "The new harbour",
                                    "summary": "<p>What the council decided.</p>", "author": "Jane Reporter",
                                    "published_at": "2026-11-02T08:00:00Z"}]},
        "ImportReport": {"type": "object", "required": list(report), "properties": report},
        "ImportRefused": {"type": "object", "required": ["error"], "properties": {"error": TEXT, **report}},
        "NewDigest": {
            "type": "object",
            "examples": [{}, {"subject": "This week's news"}, {"since": "2026-11-01T00:00:00Z"}],
            "properties": {
                "subject": {"type": ["string", "null"], "maxLength": digests.MAX_SUBJECT_LENGTH,
                            "description": "Default: '<site>: <newest title> and N more'."},
                "since": {"type": ["string", "null"], "format": "date-time",
                          "description": "Take the articles published since then, sent before or not. "
                                         "Default: those no digest that went out carried."},
            },
        },
        "Digest": {
            "type": "object",
            "required": ["id", "subject", "intro", "status", "created_at", "sent_at", "articles"],
            "properties": {
                "id": {"type": "integer"},
                "subject": TEXT,
                "intro": _nullable(TEXT),
                "status": {"type": "string", "enum": [s.value for s in DigestStatus]},
                "created_at": TIME,
                "sent_at": _nullable(TIME),
                "articles": {"type": "array", "description": "In the order the digest shows them.", "items": {
                    "type": "object", "required": ["id", "title", "url", "published_at"],
                    "properties": {"id": {"type": "integer"}, "title": TEXT, "url": TEXT,
                                   "published_at": _nullable(TIME)}}},
            },
        },
        "DeliveryStatus": {
            "type": "object",
            "required": ["status", "total", "pending", "sent", "deferred", "failed", "skipped"],
            "additionalProperties": False,
            "properties": {
                "status": {"type": "string", "enum": [s.value for s in DigestStatus]},
                **{name: {"type": "integer", "minimum": 0}
                   for name in ("total", "pending", "sent", "deferred", "failed", "skipped")},
            },
        },
        "Signup": {
            "type": "object",
            "required": ["email", "consent"],
            "examples": [{"email": "ada@example.com", "name": "Ada", "consent": True,
                          "source": "https://news.example.org/2026/11/harbour"}],
            "properties": {
                "email": {"type": "string", "format": "email", "maxLength": MAX_EMAIL_LENGTH},
                "name": {"type": ["string", "null"], "maxLength": MAX_NAME_LENGTH},
                "consent": {"type": ["boolean", "string"],
                            "description": "A real yes: true, or one of y, yes, on, true, 1. Anything else is "
                                           "refused."},
                "terms_version": {"type": "integer", "minimum": 1, "maximum": MAX_ID,
                                  "description": "The id of the terms version shown; default: the current one."},
                "source": {"type": "string", "description": "The page or form, for the record."},
                "website": {"type": "string", "maxLength": 0,
                            "description": "Honeypot: leave it out or empty; a value is refused."},
            },
        },
        "SignupAccepted": {
            "type": "object", "required": ["status", "message"],
            "properties": {"status": {"const": "ok"}, "message": TEXT},
        },
    }


def _responses() -> dict:
    error = _ref("Error")
    return {
        "BadRequest": _answer("Bad input; `field` names it. Nothing was changed.", error),
        "Unauthorized": _answer(
            "No token, or an unknown or revoked one.", error,
            {"WWW-Authenticate": {"required": True, "schema": {"type": "string"}}}),
        "Forbidden": _answer("The token's operator has a role that may not do this.", error),
        "NotFound": _answer("No such id.", error),
        "Conflict": _answer("Not possible in the current state; the message says why.", error),
    }


def _paths() -> dict:
    subscriber_id = _id_parameter("subscriber_id", "subscriber")
    digest_id = _id_parameter("digest_id", "digest")
    status_answer = _answer("The digest's delivery status.", _ref("DeliveryStatus"))

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
                                _ref("SignupAccepted")),
                 "429": _answer("Too many signups from this address.", _ref("Error"))},
                errors=("400",), body=_ref("Signup"),
                description="Starts double opt-in: a confirmation email goes out. Rate-limited per IP. "
                            "Answers CORS for EMBED_ALLOWED_ORIGINS."),
            "options": _operation("subscribePreflight", "signup", "CORS preflight", None,
                                  {"204": {"description": "Preflight answered."}}),
        },
        "/api/v1/subscribers": {
            "get": _operation(
                "listSubscribers", "subscribers", "List subscribers, oldest first", Role.VIEWER,
                {"200": _answer("A page of subscribers.", _ref("SubscriberPage"))},
                errors=("400",),
                parameters=(
                    {"name": "status", "in": "query", "description": "Only subscribers in this status.",
                     "schema": {"type": "string", "enum": [s.value for s in SubscriberStatus]}},
                    {"name": "email", "in": "query", "description": "Only addresses containing this text.",
                     "schema": {"type": "string", "maxLength": 254}},
                    *_page_parameters("the page goes on after that subscriber"),
                )),
            "post": _operation(
                "createSubscriber", "subscribers", "Add a subscriber who gave their consent", Role.ADMIN,
                {"201": _answer("A new subscriber, pending: the confirmation email is on its way.",
                                _ref("SubscriberCreated"), LOCATION),
                 "202": _answer("A known address: consent recorded, double opt-in (re)started.",
                                _ref("SubscriberCreated")),
                 "200": _answer("A known address that is confirmed, bounced or complained: nothing changed.",
                                _ref("SubscriberCreated"))},
                errors=("400", "409"), body=_ref("NewSubscriber"),
                description="Records a `requested` consent event (the current terms, this request's IP and "
                            "user agent, source 'api-operator: <consent_source>') and starts double opt-in "
                            "exactly like the signup form. 409: the address is on the suppression list."),
        },
        "/api/v1/subscribers/{subscriber_id}": {
            "get": _operation("getSubscriber", "subscribers", "A subscriber and their consent record", Role.VIEWER,
                              {"200": _answer("The subscriber.", _ref("SubscriberWithConsent"))},
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
                {"200": _answer("A page of articles.", _ref("ArticlePage"))},
                errors=("400",), parameters=_page_parameters("the page goes on after that article")),
            "post": _operation(
                "importArticles", "articles", "Add or update articles", Role.EDITOR,
                {"201": _answer("Imported; at least one article was new.", _ref("ImportReport")),
                 "200": _answer("Imported; none was new.", _ref("ImportReport")),
                 "400": _answer("Not JSON, or no valid article (then with the report: `errors` names the bad "
                                "ones). Nothing was changed.", _ref("ImportRefused")),
                 "413": _answer(f"Too large: at most {articles_api.MAX_ARTICLES} articles or "
                                f"{articles_api.MAX_BODY_BYTES // 2**20} MB per request.", _ref("Error"))},
                body={"oneOf": [_ref("ArticleIn"),
                                {"type": "array", "items": _ref("ArticleIn"), "maxItems": articles_api.MAX_ARTICLES}]},
                description="One article object or an array of them. An article is known by its URL: sending "
                            "it again changes nothing, a changed one is updated. Also accepts the site-wide "
                            "API_TOKEN setting as the bearer token."),
        },
        "/api/v1/digests": {"post": _operation(
            "createDigest", "digests", "Compose a draft digest", Role.EDITOR,
            {"201": _answer("The draft.", _ref("Digest"), LOCATION)},
            errors=("400", "409"), body=_ref("NewDigest"), body_required=False,
            description="Takes the visible articles no digest that went out carried (or, with `since`, those "
                        f"published since then), newest first, at most {digests.MAX_ARTICLES}. 409 when there is "
                        "none: nothing new to send is a state of the site, not bad input; try again once articles "
                        "arrive.")},
        "/api/v1/digests/{digest_id}": {"get": _operation(
            "getDigest", "digests", "A digest and its articles", Role.VIEWER,
            {"200": _answer("The digest.", _ref("Digest"))}, errors=("404",), parameters=(digest_id,))},
        "/api/v1/digests/{digest_id}/status": {"get": _operation(
            "getDigestStatus", "digests", "Delivery progress", Role.VIEWER, {"200": status_answer},
            errors=("404",), parameters=(digest_id,))},
        "/api/v1/digests/{digest_id}/send": {"post": _operation(
            "sendDigest", "digests", "Send a draft to every confirmed subscriber", Role.EDITOR,
            {"202": _answer("Sending has started.", _ref("DeliveryStatus"))}, errors=("404", "409"),
            parameters=(digest_id,),
            description="Each confirmed subscriber gets it exactly once. 409 unless the digest is a draft.")},
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
            "schemas": _schemas(),
            "responses": _responses(),
        },
    }
