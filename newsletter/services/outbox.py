"""Transactional mail: send a committed OutboundEmail row exactly once, retry what was temporary.

State machine of a row: pending -> (leased) -> sent | deferred -> ... -> sent | failed.
A worker takes a lease with one conditional UPDATE, so two workers woken for the same row (a
sweeper re-enqueue racing the original message) never both send it. The only duplicate window is
SMTP's own (line lost between "." and "250"), and a retry then carries the same Message-ID.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import and_, or_, select, update

from .. import metrics
from ..errors import PermanentMailError, TransientMailError
from ..extensions import db
from ..infra.smtp import SmtpConnection, connection_from_config
from ..mail.compose import sender_address
from ..models import OutboundEmail, OutboundStatus
from ..queue import SEND_OUTBOUND, enqueue, worker_id
from .delivery.throttle import backoff

log = logging.getLogger(__name__)
SWEEP_GRACE = timedelta(seconds=10)  # leave freshly enqueued rows to the message that woke for them


def _due(now: datetime):
    return and_(
        OutboundEmail.status.in_([OutboundStatus.PENDING, OutboundStatus.DEFERRED]),
        OutboundEmail.next_attempt_at <= now,
        or_(OutboundEmail.lease_expires_at.is_(None), OutboundEmail.lease_expires_at < now),
    )


def claim(outbound_id: int, now: datetime) -> OutboundEmail | None:
    lease = now + timedelta(seconds=current_app.config["OUTBOX_LEASE_SECONDS"])
    claimed = db.session.execute(
        update(OutboundEmail)
        .where(OutboundEmail.id == outbound_id, _due(now))
        .values(lease_owner=worker_id(), lease_expires_at=lease)
    ).rowcount
    db.session.commit()
    return db.session.get(OutboundEmail, outbound_id) if claimed else None


def send_outbound(outbound_id: int, now: datetime, connection: SmtpConnection | None = None) -> str:
    """Send one row if it is due and nobody else holds it. Returns the row's status afterwards."""
    row = claim(outbound_id, now)
    if row is None:
        return "not-due"
    own = connection is None
    if own:
        connection = connection_from_config(current_app.config)
    try:
        connection.send(row.message.encode("utf-8"), sender_address(), row.recipient)
    except TransientMailError as exc:
        _record_failure(row, now, str(exc), permanent=False)
    except PermanentMailError as exc:
        _record_failure(row, now, str(exc), permanent=True)
    except Exception as exc:  # a bug must not leave the row leased and looping forever: record, retry, expire
        log.exception("unexpected error sending outbound email %s", outbound_id)
        db.session.rollback()
        _record_failure(row, now, f"unexpected error: {exc!r}", permanent=False)
    else:
        row.status, row.sent_at = OutboundStatus.SENT, now
        row.attempts += 1
    finally:
        if own:
            connection.close()
    row.lease_owner = row.lease_expires_at = None
    db.session.commit()
    metrics.record_outbound(row.status.value)
    return row.status.value


def _record_failure(row: OutboundEmail, now: datetime, error: str, permanent: bool) -> None:
    row.attempts += 1
    row.last_error = error[:500]
    expired = now - row.created_at > timedelta(seconds=current_app.config["OUTBOX_EXPIRY_SECONDS"])
    if permanent or expired:
        row.status = OutboundStatus.FAILED
    else:
        row.status = OutboundStatus.DEFERRED
        row.next_attempt_at = now + backoff(row.attempts, 60)  # about 1, 2, 4 ... minutes


def due_ids(now: datetime, limit: int = 1000) -> list[int]:
    return list(db.session.scalars(
        select(OutboundEmail.id)
        .where(_due(now - SWEEP_GRACE))
        .order_by(OutboundEmail.id)
        .limit(limit)
    ))


def sweep(now: datetime) -> int:
    """Re-enqueue every due row: what a lost queue message or a down broker left behind."""
    ids = due_ids(now)
    for outbound_id in ids:
        if not enqueue(SEND_OUTBOUND, outbound_id):
            break
    return len(ids)
