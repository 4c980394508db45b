"""The JSON API for the site's own systems: subscribers, articles and digests.

Every route declares the least role it needs (auth.api_requires: per-operator bearer tokens);
/api/v1/openapi.json (newsletter/openapi.py) describes them all. Views parse and render; the
services decide. Errors are JSON: 400 {"error", "field"} for bad input, 404 for unknown ids,
409 when the thing asked for is not possible in the current state. Every change is audited.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

from flask import Blueprint, abort, g, jsonify, make_response, request, url_for
from sqlalchemy import and_, func, or_, select

from ..auth import api_requires, public
from ..clock import now
from ..errors import InvalidInput
from ..extensions import csrf, db
from ..models import Article, Digest, Role, Subscriber, SubscriberStatus
from ..openapi import DEFAULT_PAGE, MAX_CONSENT_SOURCE, MAX_ID, MAX_PAGE, openapi_document
from ..services import delivery, digests, gdpr, operators, subscriptions, suppression
from ..services.terms import current_terms
from ..validation import consent_given, normalize_email, reject_control_characters
from .context import request_context

bp = Blueprint("api_v1", __name__, url_prefix="/api/v1")
# Bearer tokens in a header, never a session cookie: a cross-site form has nothing to ride on.
csrf.exempt(bp)

CONSENT_REQUIRED = ("consent must be true: the person's own yes to receiving the newsletter "
                    "(the raw value is recorded). Nothing was stored.")
SUPPRESSED = ("This address is on the suppression list (a hard bounce, a complaint or an erasure): "
              "it is never mailed again.")
_DIGITS = re.compile(r"[0-9]{1,19}")
_SORT_TIME = func.coalesce(Article.published_at, Article.created_at)  # as digests: published, else added


@bp.errorhandler(InvalidInput)
def invalid_input(error: InvalidInput):
    return jsonify(error=error.message, field=error.field), 400


@bp.get("/openapi.json")
@public
def openapi_json():
    return jsonify(openapi_document())


# --- subscribers --------------------------------------------------------------------------------


@bp.get("/subscribers")
@api_requires(Role.VIEWER)
def list_subscribers():
    limit = _int_arg("limit", DEFAULT_PAGE, 1, MAX_PAGE)
    after_id = _int_arg("after_id", 0, 0, MAX_ID)
    query = select(Subscriber).where(Subscriber.id > after_id).order_by(Subscriber.id).limit(limit + 1)
    status = request.args.get("status")
    if status:
        try:
            query = query.where(Subscriber.status == SubscriberStatus(status))
        except ValueError:
            allowed = ", ".join(s.value for s in SubscriberStatus)
            raise InvalidInput("status", f"Unknown status {status[:40]!r}: use one of {allowed}.") from None
    search = request.args.get("email")
    if search:
        reject_control_characters("email", search)
        # Addresses are stored lowercased; autoescape keeps % and _ literal.
        query = query.where(Subscriber.email.contains(search.strip().lower()[:254], autoescape=True))
    return _page(list(db.session.scalars(query)), limit, subscriber_json)


@bp.get("/subscribers/<int:subscriber_id>")
@api_requires(Role.VIEWER)
def get_subscriber(subscriber_id):
    subscriber = _found(Subscriber, subscriber_id, "subscriber")
    return jsonify(subscriber_json(subscriber, with_events=True))


@bp.post("/subscribers")
@api_requires(Role.ADMIN)
def create_subscriber():
    """Signup on a person's behalf, with the consent they gave the operator: the same double opt-in
    as the form. 201: new; 202: known, opt-in (re)started; 200: known, nothing to do."""
    data = _json_object()
    address = normalize_email(data.get("email"))
    if not consent_given(data.get("consent")):
        raise InvalidInput("consent", CONSENT_REQUIRED)
    source = _consent_source(data.get("consent_source"))
    if suppression.is_suppressed(address):  # the public is never told; an admin may be
        return _error(409, SUPPRESSED, "email")
    clock = now()
    known = _subscriber_by_email(address)
    before = known.status.value if known else None
    subscriptions.request_signup(address, data.get("name"), data.get("consent"), current_terms(clock),
                                 request_context(f"api-operator: {source}"), clock)
    subscriber = _subscriber_by_email(address)
    if subscriber is None:  # suppressed a moment ago, by a bounce or an erasure
        return _error(409, SUPPRESSED, "email")
    if known is None:
        code, outcome, message = 201, "created", "Subscriber created: a confirmation email is on its way."
    elif subscriber.status is SubscriberStatus.PENDING:
        code, outcome, message = 202, "optin", "Consent recorded: the person must confirm by email (double opt-in)."
    else:
        code, outcome, message = 200, "unchanged", f"The subscriber is {subscriber.status.value}: nothing changed."
    if outcome != "unchanged":
        _audit("subscriber.create", f"subscriber:{subscriber.id}", {"outcome": outcome, "was": before,
                                                                    "source": source}, clock)
    response = jsonify({**subscriber_json(subscriber), "message": message})
    response.status_code = code
    if code == 201:
        response.headers["Location"] = url_for("api_v1.get_subscriber", subscriber_id=subscriber.id)
    return response


@bp.delete("/subscribers/<int:subscriber_id>")
@api_requires(Role.ADMIN)
def erase_subscriber(subscriber_id):
    """GDPR Art. 17: erase the person; the address is kept only as a suppression HMAC. The service
    audits the erasure (subscribers.erase, by id) in the transaction that makes it."""
    _found(Subscriber, subscriber_id, "subscriber")
    gdpr.erase_person(subscriber_id, now(), g.operator, request.remote_addr)
    return "", 204


# --- articles -----------------------------------------------------------------------------------


@bp.get("/articles")
@api_requires(Role.VIEWER)
def list_articles():
    """Newest first (published, else added), hidden ones included and marked."""
    limit = _int_arg("limit", DEFAULT_PAGE, 1, MAX_PAGE)
    after_id = _int_arg("after_id", None, 1, MAX_ID)
    query = select(Article).order_by(_SORT_TIME.desc(), Article.id.desc()).limit(limit + 1)
    if after_id is not None:
        # Keyset on (time, id): the cursor is an id, its time is looked up.
        anchor = db.session.scalar(select(_SORT_TIME).where(Article.id == after_id))
        if anchor is None:
            raise InvalidInput("after_id", f"No article with id {after_id} to continue after.")
        query = query.where(or_(_SORT_TIME < anchor, and_(_SORT_TIME == anchor, Article.id < after_id)))
    return _page(list(db.session.scalars(query)), limit, article_json)


# --- digests ------------------------------------------------------------------------------------


@bp.post("/digests")
@api_requires(Role.EDITOR)
def create_digest():
    """A draft of the articles not sent yet (or published since `since`). 409 when there is none."""
    data = _json_object(empty_ok=True)
    subject = data.get("subject")
    if subject is not None and not isinstance(subject, str):
        raise InvalidInput("subject", "subject must be a string.")
    since = _time(data.get("since"), "since")
    clock = now()
    digest = digests.create_digest(clock, subject=subject, since=since)
    if digest is None:
        return _error(409, "No new articles: every visible article went out in an earlier digest"
                           if since is None else "No article was published since then.")
    _audit("digest.create", f"digest:{digest.id}", {"articles": len(digest.items)}, clock)
    response = jsonify(digest_json(digest))
    response.status_code = 201
    response.headers["Location"] = url_for("api_v1.get_digest", digest_id=digest.id)
    return response


@bp.get("/digests/<int:digest_id>")
@api_requires(Role.VIEWER)
def get_digest(digest_id):
    return jsonify(digest_json(_found(Digest, digest_id, "digest")))


@bp.get("/digests/<int:digest_id>/status")
@api_requires(Role.VIEWER)
def digest_status(digest_id):
    _found(Digest, digest_id, "digest")
    return jsonify(delivery.status(digest_id))


@bp.post("/digests/<int:digest_id>/send")
@api_requires(Role.EDITOR)
def send_digest(digest_id):
    return _control(digest_id, "send", delivery.start_sending, 202)


@bp.post("/digests/<int:digest_id>/pause")
@api_requires(Role.EDITOR)
def pause_digest(digest_id):
    return _control(digest_id, "pause", delivery.pause)


@bp.post("/digests/<int:digest_id>/resume")
@api_requires(Role.EDITOR)
def resume_digest(digest_id):
    return _control(digest_id, "resume", delivery.resume)


@bp.post("/digests/<int:digest_id>/cancel")
@api_requires(Role.EDITOR)
def cancel_digest(digest_id):
    return _control(digest_id, "cancel", delivery.cancel)


def _control(digest_id: int, action: str, change, code: int = 200):
    _found(Digest, digest_id, "digest")
    clock = now()
    try:
        change(digest_id, clock)
    except InvalidInput as error:  # the digest is not in a state this change starts from
        return _error(409, error.message)
    status = delivery.status(digest_id)
    _audit(f"digest.{action}", f"digest:{digest_id}", {"total": status["total"]} if action == "send" else None, clock)
    return jsonify(status), code


# --- representations ----------------------------------------------------------------------------


def subscriber_json(subscriber: Subscriber, with_events: bool = False) -> dict:
    body = {
        "id": subscriber.id,
        "email": subscriber.email,
        "name": subscriber.name,
        "status": subscriber.status.value,
        "created_at": _iso(subscriber.created_at),
        "confirmed_at": _iso(subscriber.confirmed_at),
        "unsubscribed_at": _iso(subscriber.unsubscribed_at),
    }
    if with_events:
        body["consent_events"] = [subscriptions.event_record(event) for event in subscriber.events]
    return body


def article_json(article: Article) -> dict:
    return {
        "id": article.id,
        "url": article.url,
        "title": article.title,
        "summary_html": article.summary_html,
        "author": article.author,
        "image_url": article.image_url,
        "published_at": _iso(article.published_at),
        "created_at": _iso(article.created_at),
        "updated_at": _iso(article.updated_at),
        "source": article.source,
        "hidden": article.hidden,
    }


def digest_json(digest: Digest) -> dict:
    return {
        "id": digest.id,
        "subject": digest.subject,
        "intro": digest.intro,
        "status": digest.status.value,
        "created_at": _iso(digest.created_at),
        "sent_at": _iso(digest.sent_at),
        "articles": [{"id": a.id, "title": a.title, "url": a.url, "published_at": _iso(a.published_at)}
                     for a in digest.articles],
    }


# --- helpers ------------------------------------------------------------------------------------


def _error(code: int, message: str, field: str | None = None):
    body = {"error": message} if field is None else {"error": message, "field": field}
    return jsonify(body), code


def _found(model, ident: int, label: str):
    found = db.session.get(model, ident) if 0 < ident <= MAX_ID else None
    if found is None:
        abort(make_response(jsonify(error=f"No {label} with id {ident}."), 404))
    return found


def _audit(action: str, target: str, detail: dict | None, clock: datetime) -> None:
    operators.audit(g.operator, f"api.{action}", target, detail, request.remote_addr, clock)
    db.session.commit()


def _page(rows: list, limit: int, render) -> tuple:
    """{"items", "next_after_id"}: next_after_id is null on the last page."""
    more = len(rows) > limit
    rows = rows[:limit]
    return jsonify(items=[render(row) for row in rows], next_after_id=rows[-1].id if more else None)


def _int_arg(name: str, default, low: int, high: int):
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    if not _DIGITS.fullmatch(raw) or not low <= int(raw) <= high:
        raise InvalidInput(name, f"{name} must be a whole number from {low} to {high}.")
    return int(raw)


def _json_object(empty_ok: bool = False) -> dict:
    if empty_ok and not request.get_data():
        return {}
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise InvalidInput("body", "Send a JSON object (Content-Type: application/json).")
    return data


def _time(raw, field: str) -> datetime | None:
    """ISO 8601; a time without an offset is UTC."""
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise InvalidInput(field, f"{field} must be an ISO 8601 date-time string.")
    try:
        value = datetime.fromisoformat(raw.strip())
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)
    except (ValueError, OverflowError):
        raise InvalidInput(field, f"{field} is not an ISO 8601 date-time: {raw[:60]!r}.") from None


def _consent_source(raw) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise InvalidInput("consent_source", "Say where and how the person gave their consent "
                                             "(consent_source), e.g. 'paper form at the 2026 book fair'.")
    reject_control_characters("consent_source", raw)
    if len(raw.strip()) > MAX_CONSENT_SOURCE:
        raise InvalidInput("consent_source", f"consent_source is too long (at most {MAX_CONSENT_SOURCE} characters).")
    return raw.strip()


def _subscriber_by_email(address: str) -> Subscriber | None:
    return db.session.scalar(select(Subscriber).where(Subscriber.email == address))


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None
