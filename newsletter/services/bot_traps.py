"""Cheap defences against signup bots: a honeypot field and a time trap.

The time trap is a signed token holding when the form was served and a random nonce. A form sent
back faster than a person could fill it in, one whose token is missing or forged, and one whose
token was used before (one served form signs up one address) are refused. The token is not tied
to a session, so the form works inside an iframe on another site, where cookies are not sent.
"""

import secrets
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError

from .. import metrics, tokens
from ..errors import InvalidInput, InvalidToken
from ..extensions import db
from ..models import UsedFormToken

HONEYPOT_FIELD = "website"
EXPIRED = "This form has expired or was altered. Please reload the page and try again."


def form_token(now: datetime) -> str:
    # The exact serve time: the signature's own timestamp has whole seconds only.
    return tokens.make(tokens.SIGNUP_FORM, {"served": now.timestamp(), "nonce": secrets.token_hex(16)}, now)


def check_form_token(token, now: datetime) -> None:
    """Refuses a bad token; spends a good one, so that it is refused the next time."""
    if not isinstance(token, str) or not token:
        raise _refused("form_token", "This form is missing its security token. Please reload the page and try again.")
    max_age = current_app.config["SIGNUP_FORM_MAX_AGE"]
    try:
        payload = tokens.read(tokens.SIGNUP_FORM, token, now, max_age=max_age)
    except InvalidToken:
        raise _refused("form_token", EXPIRED) from None
    served = payload.get("served") if isinstance(payload, dict) else None
    nonce = payload.get("nonce") if isinstance(payload, dict) else None
    if not isinstance(served, (int, float)) or not isinstance(nonce, str) or not 0 < len(nonce) <= 32:
        raise _refused("form_token", EXPIRED)
    if now.timestamp() - served < current_app.config["SIGNUP_MIN_SECONDS"]:
        raise _refused("too_fast", "That was very fast. Please wait a few seconds, then send the form again.")
    _spend(nonce, now, expires_at=now + timedelta(seconds=max_age + 1))


def _spend(nonce: str, now: datetime, expires_at: datetime) -> None:
    # The primary key decides: of two requests with one token, exactly one INSERT succeeds.
    # Its own commit: a signup refused afterwards (no consent, say) does not make the token good again.
    db.session.execute(delete(UsedFormToken).where(UsedFormToken.expires_at < now))  # they are refused anyway
    db.session.add(UsedFormToken(nonce=nonce, expires_at=expires_at))
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        raise _refused("form_token_reused", EXPIRED) from None


def check_honeypot(value) -> None:
    if value:
        raise _refused("honeypot", "Please leave the field marked “leave empty” empty; it is there to catch robots.")


def _refused(reason: str, message: str) -> InvalidInput:
    metrics.record_signup("refused", reason)
    return InvalidInput("form", message)
