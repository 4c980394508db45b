"""What we hold on one person, handed over (GDPR Art. 15 and 20) or erased (Art. 17).

Erasure keeps exactly one trace: a keyed HMAC of the address in the suppression list, so the
address is never mailed again (a later signup or import is skipped silently) while nothing
readable remains. The audit event of an erasure names the subscriber id, never the address.
"""

from __future__ import annotations

import re
from datetime import datetime
from email.parser import HeaderParser
from email.policy import default as default_policy

from sqlalchemy import delete, func, or_, select

from ..errors import InvalidInput
from ..extensions import db
from ..models import AuditEvent, ConsentEvent, Delivery, Digest, OutboundEmail, SignupRequest, Subscriber, Suppression
from . import operators, subscriptions, suppression
from ..times import iso_z

ERASED_REASON = "erased"


def export_person(subscriber_id: int) -> dict:
    """Everything we hold on one subscriber, as JSON-ready data. Raises InvalidInput for an unknown id."""
    subscriber = _subscriber(subscriber_id)
    record = subscriptions.consent_record(subscriber.email)
    address_key = suppression.address_hmac(subscriber.email)
    suppressed = db.session.scalar(select(Suppression).where(Suppression.address_hmac == address_key))
    deliveries = db.session.execute(
        select(Delivery.digest_id, Digest.subject, Delivery.status, Delivery.attempts, Delivery.sent_at,
               Delivery.last_error)
        .join(Digest, Digest.id == Delivery.digest_id)
        .where(Delivery.subscriber_id == subscriber.id).order_by(Delivery.id)
    ).all()
    outbound = db.session.scalars(
        select(OutboundEmail).where(_outbound_of(subscriber)).order_by(OutboundEmail.id)
    ).all()
    return {
        "subscriber": {
            "id": subscriber.id,
            "email": record["email"],
            "name": record["name"],
            "status": record["status"],
            "created_at": record["created_at"],
            "confirmed_at": record["confirmed_at"],
            "unsubscribed_at": record["unsubscribed_at"],
        },
        "consent_events": record["events"],
        "deliveries": [
            {"digest_id": row.digest_id, "subject": row.subject, "status": row.status.value,
             "attempts": row.attempts, "sent_at": iso_z(row.sent_at), "last_error": row.last_error}
            for row in deliveries
        ],
        # The subject only: the body is the confirmation text every subscriber gets, plus link tokens.
        "outbound_emails": [
            {"kind": email.kind, "subject": _subject(email.message), "recipient": email.recipient,
             "status": email.status.value, "attempts": email.attempts, "created_at": iso_z(email.created_at),
             "sent_at": iso_z(email.sent_at), "last_error": email.last_error}
            for email in outbound
        ],
        "suppression": {
            "suppressed": suppressed is not None,
            "reason": suppressed.reason if suppressed else None,
            "since": iso_z(suppressed.created_at) if suppressed else None,
        },
    }


def erase_person(subscriber_id: int, now: datetime, by, ip: str | None) -> None:
    """Delete the subscriber and every row about them, keep their address only as a suppression
    HMAC, and audit it by id. One transaction. Raises InvalidInput for an unknown id."""
    subscriber = _subscriber(subscriber_id)
    address = subscriber.email
    suppression.suppress(address, ERASED_REASON, now)
    # Core deletes, children first: SQLite does not cascade on its own, and the ORM would try to
    # null the ledger's foreign keys first, which the append-only hook refuses.
    for statement in (
        delete(Delivery).where(Delivery.subscriber_id == subscriber_id),
        delete(OutboundEmail).where(_outbound_of(subscriber)),
        delete(ConsentEvent).where(ConsentEvent.subscriber_id == subscriber_id),
        delete(Subscriber).where(Subscriber.id == subscriber_id),
        delete(SignupRequest).where(SignupRequest.email == address),  # signups not yet decided
    ):
        db.session.execute(statement, execution_options={"synchronize_session": False})
    db.session.expunge(subscriber)
    _scrub_audit_log(address, subscriber_id)
    operators.audit(by, "subscribers.erase", f"subscriber:{subscriber_id}", None, ip, now)
    db.session.commit()


def _scrub_audit_log(address: str, subscriber_id: int) -> None:
    """Operators' notes may have quoted the address (a consent source, say): it goes from there too."""
    needle = address.lower()
    pattern = re.compile(re.escape(needle), re.IGNORECASE)
    placeholder = f"[erased subscriber:{subscriber_id}]"
    events = db.session.scalars(select(AuditEvent).where(or_(
        func.lower(AuditEvent.detail).contains(needle, autoescape=True),
        func.lower(AuditEvent.target).contains(needle, autoescape=True),
    ))).all()
    for event in events:
        if event.detail:
            event.detail = pattern.sub(placeholder, event.detail)
        if event.target:
            event.target = pattern.sub(placeholder, event.target)[:200]


def _subscriber(subscriber_id: int) -> Subscriber:
    subscriber = db.session.get(Subscriber, subscriber_id)
    if subscriber is None:
        raise InvalidInput("subscriber", f"No subscriber with id {subscriber_id}.")
    return subscriber


def _outbound_of(subscriber: Subscriber):
    # Every transactional email is tied to its subscriber today; the recipient catches any that is not.
    return or_(OutboundEmail.subscriber_id == subscriber.id, OutboundEmail.recipient == subscriber.email)


def _subject(message: str) -> str | None:
    if not message:
        return None
    subject = HeaderParser(policy=default_policy).parsestr(message, headersonly=True).get("Subject")
    return str(subject) if subject is not None else None

