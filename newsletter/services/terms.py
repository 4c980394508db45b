"""Versioned consent text. Versions are kept forever; a consent names the one it agreed to."""

import hashlib
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from ..errors import InvalidInput
from ..extensions import db
from ..models import TermsVersion

DEFAULT_TERMS = (
    "I agree to receive the newsletter by email. My address is used only to send it; "
    "I can unsubscribe at any time with the link in every email."
)


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def publish_terms(text: str, now: datetime) -> TermsVersion:
    text = text.strip()
    if not text:
        raise InvalidInput("terms", "The terms text is empty.")
    latest = db.session.scalar(select(TermsVersion).order_by(TermsVersion.version.desc()).limit(1))
    if latest is not None and latest.text == text:
        raise InvalidInput("terms", f"This text is already the current version ({latest.version}).")
    next_version = (db.session.scalar(select(func.max(TermsVersion.version))) or 0) + 1
    terms = TermsVersion(version=next_version, text=text, sha256=text_sha256(text), published_at=now)
    db.session.add(terms)
    db.session.commit()
    return terms


def current_terms(now: datetime) -> TermsVersion:
    """The newest version; the built-in text becomes version 1 on a fresh install."""
    terms = db.session.scalar(select(TermsVersion).order_by(TermsVersion.version.desc()).limit(1))
    if terms is not None:
        return terms
    try:
        return publish_terms(DEFAULT_TERMS, now)
    except IntegrityError:  # another process published version 1 at the same moment
        db.session.rollback()
        return db.session.scalar(select(TermsVersion).order_by(TermsVersion.version.desc()).limit(1))


def terms_by_id(terms_id) -> TermsVersion | None:
    try:
        value = int(terms_id)
    except (TypeError, ValueError, OverflowError):  # JSON allows Infinity; SQLite has no bigger integer
        return None
    return db.session.get(TermsVersion, value) if 0 < value <= 2**31 - 1 else None
