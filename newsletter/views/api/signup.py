"""POST /api/v1/subscribe: signups that sites post themselves (and the embed script).

Callers are anonymous; the double opt-in is what protects the address. Browsers on the embed
origins (EMBED_ALLOWED_ORIGINS) may call it cross-site: CORS is answered for it alone.
"""

from flask import current_app, jsonify, request

from ...auth import public
from ...clock import now
from ...errors import InvalidInput
from ...services import signup_requests
from ...services.terms import current_terms, terms_by_id
from ..context import request_context
from ..public import signup_limit
from . import parsing, schemas
from .blueprint import bp
from .representations import error

ACCEPTED = schemas.SignupAccepted(
    status="ok", message="Thanks! Check your inbox for an email to confirm your subscription.")
SEND_JSON = "Send a JSON object: {\"email\": ..., \"name\": ..., \"consent\": true}."


@bp.after_request
def cors(response):
    if request.endpoint not in (f"{bp.name}.subscribe", f"{bp.name}.subscribe_preflight"):
        return response
    allowed = [o.strip() for o in current_app.config["EMBED_ALLOWED_ORIGINS"].split(",") if o.strip()]
    origin = request.headers.get("Origin")
    if origin and ("*" in allowed or origin in allowed):
        response.headers["Access-Control-Allow-Origin"] = "*" if "*" in allowed else origin
        response.headers["Access-Control-Allow-Methods"] = "POST, OPTIONS"
        response.headers["Access-Control-Allow-Headers"] = "Content-Type"
        response.headers["Vary"] = "Origin"
    return response


@bp.route("/subscribe", methods=["OPTIONS"])
@public
def subscribe_preflight():
    return "", 204


@bp.post("/subscribe")
@signup_limit
@public
def subscribe():
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        return error(400, SEND_JSON)
    signup = parsing.body(schemas.Signup, data)
    clock = now()
    given_terms = "terms_version" in signup.model_fields_set
    terms = terms_by_id(signup.terms_version) if given_terms else current_terms(clock)
    if terms is None:
        raise InvalidInput("terms_version", schemas.UNKNOWN_TERMS)
    source = f"api: {signup.source or request.referrer or ''}".strip()
    signup_requests.record(signup.email, signup.name, signup.consent, terms, request_context(source), clock)
    return jsonify(ACCEPTED.model_dump(mode="json")), 202
