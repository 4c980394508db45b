"""Composing digests: the articles readers have not had yet, newest first, in a draft."""

from __future__ import annotations

import logging
from datetime import datetime

from flask import current_app
from sqlalchemy import exists, func, select, update

from ..errors import InvalidInput
from ..extensions import db
from ..infra.smtp import connection_from_config
from ..mail.compose import sender_address
from ..mail.digest import SAMPLE_READER, one_line, render_digest
from ..models import DIGEST_SENT_STATES, Article, Digest, DigestArticle, DigestStatus, Subscriber
from ..validation import normalize_email, reject_control_characters
from . import delivery, operators
from ..text import truncate
from .readiness import NotReadyToSend

log = logging.getLogger(__name__)

# A digest carries at most this many articles, the newest; the others wait for the next one.
# Past about 100 kB of HTML Gmail clips a message, and the unsubscribe footer with it.
MAX_ARTICLES = 30
MAX_SUBJECT_LENGTH = 200  # Digest.subject
MAX_INTRO_LENGTH = 5000
EDITABLE = (DigestStatus.DRAFT, DigestStatus.SCHEDULED)  # not gone out yet

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
    subject = checked_subject(subject)
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
    title = truncate(title, room)
    return f"{site}: {title}{more}"[:MAX_SUBJECT_LENGTH]


def checked_subject(subject: str | None) -> str | None:
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
    with connection_from_config(current_app.config) as connection:
        connection.send(message, sender_address(), email)
    return rendered.subject


# --- composing by hand and scheduling (the console) ------------------------------------------
# These add rows to the session and leave the commit to the caller, which audits in the same transaction.


def compose_draft(article_ids: list[int], subject: str | None, intro: str | None, now: datetime) -> Digest:
    """A draft carrying exactly these articles, in this order. Raises InvalidInput."""
    subject = checked_subject(subject)
    intro = _checked_intro(intro)
    if not article_ids:
        raise InvalidInput("articles", "Choose at least one article.")
    if len(article_ids) > MAX_ARTICLES:
        raise InvalidInput("articles", f"A digest carries at most {MAX_ARTICLES} articles: longer "
                                       "messages are clipped by Gmail, and the unsubscribe footer with them.")
    if len(set(article_ids)) != len(article_ids):
        raise InvalidInput("articles", "Each article can appear only once.")
    found = {article.id: article for article in db.session.scalars(
        select(Article).where(Article.id.in_(article_ids), Article.hidden.is_(False)))}
    gone = [str(article_id) for article_id in article_ids if article_id not in found]
    if gone:
        raise InvalidInput("articles", f"Article {', '.join(gone)} no longer exists or was hidden; "
                                       "reload the page and choose again.")
    chosen = [found[article_id] for article_id in article_ids]
    digest = Digest(subject=subject or default_subject(chosen), intro=intro,
                    status=DigestStatus.DRAFT, created_at=now)
    digest.items = [DigestArticle(article=article, position=position) for position, article in enumerate(chosen)]
    db.session.add(digest)
    db.session.flush()
    return digest


def edit_draft(digest: Digest, subject: str | None, intro: str | None) -> str:
    """New subject and intro for a digest that has not gone out. An empty subject gets the default.
    Returns the subject."""
    subject = checked_subject(subject) or default_subject(digest.articles)
    intro = _checked_intro(intro)
    # Conditional: a send that started since the page was shown wins, and the text it sends stays.
    changed = db.session.execute(
        update(Digest).where(Digest.id == digest.id, Digest.status.in_(EDITABLE)).values(subject=subject, intro=intro)
    ).rowcount
    if not changed:
        db.session.rollback()
        raise InvalidInput("digest", f"Digest {digest.id} is {digest.status.value}; only a draft or a "
                                     "scheduled digest can be changed.")
    return subject


def schedule(digest: Digest, when: datetime, now: datetime) -> None:
    """Send a draft (or move a scheduled digest) at `when`, an aware datetime in the future."""
    if when <= now:
        raise InvalidInput("when", "That time has passed: choose a later one, or send now.")
    moved = db.session.execute(
        update(Digest).where(Digest.id == digest.id, Digest.status.in_(EDITABLE))
        .values(status=DigestStatus.SCHEDULED, scheduled_for=when)
    ).rowcount
    if not moved:
        db.session.rollback()
        raise InvalidInput("digest", f"Digest {digest.id} is {digest.status.value}; only a draft or a "
                                     "scheduled digest can be scheduled.")


def send_due_scheduled(now: datetime) -> list[int]:
    """Start every scheduled digest whose time has come (beat, every minute). Returns their ids.

    start_sending moves a digest out of `scheduled` with one conditional UPDATE, so two ticks that
    overlap start each digest once; the loser is told it is no longer scheduled and moves on.
    """
    due = db.session.scalars(
        select(Digest.id).where(Digest.status == DigestStatus.SCHEDULED, Digest.scheduled_for <= now)
        .order_by(Digest.scheduled_for, Digest.id)
    ).all()
    started = []
    for digest_id in due:
        try:
            total = delivery.start_sending(digest_id, now)
        except NotReadyToSend as refusal:  # it stays scheduled: the next tick after the fix sends it
            db.session.rollback()
            log.warning("scheduled digest %s not sent: %s", digest_id, refusal.message)
            continue
        except InvalidInput:  # sent, cancelled or started by another tick meanwhile
            db.session.rollback()
            continue
        operators.audit(None, "digest.send", f"digest:{digest_id}", {"total": total, "scheduled": True}, None, now)
        db.session.commit()
        started.append(digest_id)
    return started


def _checked_intro(intro: str | None) -> str | None:
    intro = (intro or "").replace("\r\n", "\n").strip()
    if len(intro) > MAX_INTRO_LENGTH:
        raise InvalidInput("intro", f"The introduction is too long (at most {MAX_INTRO_LENGTH} characters).")
    return intro or None
