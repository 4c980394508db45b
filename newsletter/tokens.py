"""Signed link tokens. One salt per purpose, so a confirm token never unsubscribes and vice versa."""

from datetime import datetime
from functools import lru_cache

from flask import current_app
from itsdangerous import BadSignature, SignatureExpired, TimestampSigner, URLSafeTimedSerializer

from .errors import ExpiredToken, InvalidToken

CONFIRM = "newsletter.confirm"
UNSUBSCRIBE = "newsletter.unsubscribe"
SIGNUP_FORM = "newsletter.signup-form"


def _serializer(purpose: str, now: datetime) -> URLSafeTimedSerializer:
    return _cached_serializer(current_app.config["SECRET_KEY"], purpose, int(now.timestamp()))


@lru_cache(maxsize=64)
def _cached_serializer(key: str, purpose: str, stamp: int) -> URLSafeTimedSerializer:
    # itsdangerous reads time.time(); give it the caller's clock so expiry is testable. One per
    # second and purpose: a digest's thousands of unsubscribe tokens a second share it.
    signer = type("ClockSigner", (TimestampSigner,), {"get_timestamp": lambda self: stamp})
    return URLSafeTimedSerializer(key, salt=purpose, signer=signer)


def make(purpose: str, payload, now: datetime) -> str:
    return _serializer(purpose, now).dumps(payload)


def read(purpose: str, token: str, now: datetime, max_age: int | None = None):
    try:
        return _serializer(purpose, now).loads(token, max_age=max_age)
    except SignatureExpired:
        raise ExpiredToken("This link has expired.") from None
    except BadSignature:
        raise InvalidToken("This link is not valid.") from None
