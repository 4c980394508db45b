"""The suppression list: addresses never to be mailed again (hard bounce, complaint, erasure).

Only a keyed HMAC of the normalised address is stored, so an erased person leaves nothing
readable behind, yet a later signup or import of the same address is still recognised.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime

from flask import current_app
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from ..extensions import among, db
from ..models import Suppression


def address_hmac(email: str) -> str:
    key = current_app.config["SUPPRESSION_KEY"].encode()
    return hmac.new(key, email.strip().lower().encode(), hashlib.sha256).hexdigest()


def is_suppressed(email: str) -> bool:
    return db.session.scalar(select(Suppression.id).where(Suppression.address_hmac == address_hmac(email))) is not None


def suppressed_hmacs(hmacs: list[str]) -> set[str]:
    if not hmacs:
        return set()
    return set(db.session.scalars(select(Suppression.address_hmac).where(among(Suppression.address_hmac, hmacs))))


def suppress(email: str, reason: str, now: datetime) -> None:
    """Add the address (idempotent). Joins the caller's transaction; the caller commits."""
    digest = address_hmac(email)
    if db.session.scalar(select(Suppression.id).where(Suppression.address_hmac == digest)) is not None:
        return
    try:
        with db.session.begin_nested():
            db.session.add(Suppression(address_hmac=digest, reason=reason[:50], created_at=now))
    except IntegrityError:
        pass  # suppressed at the same moment by another worker: the row is there, which is all we want
