"""The JSON API for sites that post signups themselves (and for the embed script)."""

from flask import Blueprint, current_app, jsonify, request

from ..auth import public
from ..clock import now
from ..errors import InvalidInput
from ..extensions import csrf
from ..services import bot_traps, subscriptions
from ..services.terms import current_terms, terms_by_id
from .context import request_context
from .public import signup_limit

bp = Blueprint("api", __name__, url_prefix="/api/v1")
# A JSON API: browsers cannot send application/json cross-site without CORS consent, and there is
# no session to ride on. Callers are anonymous; the double opt-in is what protects the address.
csrf.exempt(bp)

ACCEPTED = {"status": "ok", "message": "Thanks! Check your inbox for an email to confirm your subscription."}


@bp.after_request
def cors(response):
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
        return jsonify(error="Send a JSON object: {\"email\": ..., \"name\": ..., \"consent\": true}."), 400
    clock = now()
    try:
        bot_traps.check_honeypot(data.get(bot_traps.HONEYPOT_FIELD))
        terms = terms_by_id(data["terms_version"]) if "terms_version" in data else current_terms(clock)
        if terms is None:
            raise InvalidInput("terms_version", "Unknown terms version.")
        source = data.get("source") if isinstance(data.get("source"), str) else None
        subscriptions.request_signup(data.get("email"), data.get("name"), data.get("consent"), terms,
                                     request_context(f"api: {source or request.referrer or ''}".strip()),
                                     clock)
    except InvalidInput as error:
        return jsonify(error=error.message, field=error.field), 400
    return jsonify(ACCEPTED), 202
