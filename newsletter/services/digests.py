"""Composing digests: the articles readers have not had yet, newest first, in a draft."""

from __future__ import annotations

from datetime import datetime

from flask import current_app
from sqlalchemy import exists, func, select

from ..errors import InvalidInput
from ..extensions import db
from ..mail.compose import sender_address
from ..mail.digest import SAMPLE_READER, one_line, render_digest
from ..mail.transport import SmtpConnection, parse_smtp_urls
from ..models import DIGEST_SENT_STATES, Article, Digest, DigestArticle, DigestStatus, Subscriber
from ..validation import normalize_email, reject_control_characters

# A digest carries at most this many articles, the newest; the others wait for the next one.
# Past about 100 kB of HTML Gmail clips a message, and the unsubscribe footer with it.
MAX_ARTICLES = 30
MAX_SUBJECT_LENGTH = 200  # Digest.subject

_NEWEST_FIRST = (func.coalesce(Article.published_at, Article.created_at).desc(), Article.id.desc())


def new_articles(since: datetime | None = None, limit: int | None = None) -> list[Article]:
    """Visible articles, newest first (published_at, else created_at).

    Without `since`: those no digest that went out (DIGEST_SENT_STATES) carried; drafts do not
    count. With `since`: those published (or, undated, added) at or after it, sent before or not.
    """
    query = select(Article).where(Article.hidden.is_(False))
    if since is None:
        # Reason: NOT EXISTS over digest_article (indexed on article_id) joined to the sent digests.
        already_sent = (
            exists()
            .where(DigestArticle.article_id == Article.id)
            .where(DigestArticle.digest_id == Digest.id)
            .where(Digest.status.in_(DIGEST_SENT_STATES))
        )
        query = query.where(~already_sent)
    else:
        query = query.where(func.coalesce(Article.published_at, Article.created_at) >= since)
    query = query.order_by(*_NEWEST_FIRST)
    if limit is not None:
        query = query.limit(limit)
    return list(db.session.scalars(query))


def create_digest(now: datetime, subject: str | None = None, since: datetime | None = None,
                  intro: str | None = None) -> Digest | None:
    """A draft digest of the new articles (see new_articles), or None when there is none.

    Raises InvalidInput for a subject with line breaks or over 200 characters.
    """
    subject = _checked_subject(subject)
    articles = new_articles(since, limit=MAX_ARTICLES)
    if not articles:
        return None
    digest = Digest(
        subject=subject or default_subject(articles),
        intro=(intro or "").strip() or None,
        status=DigestStatus.DRAFT,
        created_at=now,
    )
    digest.items = [DigestArticle(article=article, position=position) for position, article in enumerate(articles)]
    db.session.add(digest)
    db.session.commit()
    return digest


def default_subject(articles: list[Article]) -> str:
    """"<site>: <newest title> and N more", cut to fit the subject column."""
    site = one_line(current_app.config["SITE_NAME"])
    title = one_line(articles[0].title) or "new articles"
    more = f" and {len(articles) - 1} more" if len(articles) > 1 else ""
    room = MAX_SUBJECT_LENGTH - len(site) - len(": ") - len(more)
    if len(title) > room:
        title = title[: max(room - 1, 0)].rstrip() + "…"
    return f"{site}: {title}{more}"[:MAX_SUBJECT_LENGTH]


def _checked_subject(subject: str | None) -> str | None:
    if subject is None:
        return None
    reject_control_characters("subject", subject)
    subject = subject.strip()
    if len(subject) > MAX_SUBJECT_LENGTH:
        raise InvalidInput("subject", f"The subject is too long (at most {MAX_SUBJECT_LENGTH} characters).")
    return subject or None


def get_digest(digest_id: int) -> Digest:
    digest = db.session.get(Digest, digest_id)
    if digest is None:
        raise InvalidInput("digest", f"No digest with id {digest_id}.")
    return digest


def preview(digest_id: int, now: datetime) -> dict[str, bytes]:
    """digest.html, digest.txt and digest.eml as the sample reader (nobody on the list) gets them."""
    rendered = render_digest(get_digest(digest_id), now)
    reader_id, email, name = SAMPLE_READER
    bodies = rendered.personalise(reader_id, email, name, now)
    return {
        "digest.html": bodies.html.encode("utf-8"),
        "digest.txt": bodies.text.encode("utf-8"),
        "digest.eml": rendered.message_bytes(reader_id, email, name, now),
    }


def send_test_copy(digest_id: int, address: str, now: datetime) -> str:
    """Send one copy marked as a test ("[TEST] " subject, X-Newsletter-Test: yes) to any address.

    A subscriber's own address gets their name and a working unsubscribe link. Returns the subject.
    Raises InvalidInput (digest, address), TransientMailError or PermanentMailError (the relay).
    """
    email = normalize_email(address)
    digest = get_digest(digest_id)
    subscriber = db.session.scalar(select(Subscriber).where(Subscriber.email == email))
    rendered = render_digest(digest, now, test=True)
    message = rendered.message_bytes(subscriber.id if subscriber else 0, email,
                                     subscriber.name if subscriber else None, now)
    with SmtpConnection(parse_smtp_urls(current_app.config["SMTP_URL"]),
                        timeout=current_app.config["SMTP_TIMEOUT"]) as connection:
        connection.send(message, sender_address(), email)
    return rendered.subject
