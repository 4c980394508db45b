"""Cheap defences against signup bots: a honeypot field and a time trap.

The time trap is a signed token holding when the form was served. A form sent back faster than a
person could fill it in, or one whose token is missing or forged, is refused. The token is not tied
to a session, so the form works inside an iframe on another site, where cookies are not sent.
"""

from datetime import datetime

from flask import current_app

from .. import metrics, tokens
from ..errors import InvalidInput, InvalidToken

HONEYPOT_FIELD = "website"


def form_token(now: datetime) -> str:
    # The exact serve time: the signature's own timestamp has whole seconds only.
    return tokens.make(tokens.SIGNUP_FORM, {"served": now.timestamp()}, now)


def check_form_token(token, now: datetime) -> None:
    if not isinstance(token, str) or not token:
        raise _refused("form_token", "This form is missing its security token. Please reload the page and try again.")
    try:
        payload = tokens.read(tokens.SIGNUP_FORM, token, now, max_age=current_app.config["SIGNUP_FORM_MAX_AGE"])
    except InvalidToken:
        raise _refused("form_token",
                       "This form has expired or was altered. Please reload the page and try again.") from None
    served = payload.get("served") if isinstance(payload, dict) else None
    if not isinstance(served, (int, float)):
        raise _refused("form_token", "This form has expired or was altered. Please reload the page and try again.")
    if now.timestamp() - served < current_app.config["SIGNUP_MIN_SECONDS"]:
        raise _refused("too_fast", "That was very fast. Please wait a few seconds, then send the form again.")


def check_honeypot(value) -> None:
    if value:
        raise _refused("honeypot", "Please leave the field marked “leave empty” empty; it is there to catch robots.")


def _refused(reason: str, message: str) -> InvalidInput:
    metrics.record_signup("refused", reason)
    return InvalidInput("form", message)
