"""The one place that reads the wall clock. Services take `now` as an argument; views ask here."""

from datetime import datetime, timezone

from flask import current_app


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def now() -> datetime:
    """The app's clock: the real one, or the one create_app was given (tests freeze it)."""
    return current_app.extensions.get("clock", utcnow)()
