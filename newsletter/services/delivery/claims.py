"""Claims: a worker leases due rows of its range, and records each outcome while it holds the lease."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import and_, func, or_, select, update

from ... import queue
from ...extensions import among, db
from ...infra import redis_wire
from ...models import Delivery, DeliveryStatus
from .sent_marks import SentMarker, process_marker

OPEN = (DeliveryStatus.PENDING, DeliveryStatus.DEFERRED)


@dataclass
class Claimed:
    id: int
    subscriber_id: int
    attempts: int
    created: datetime


def _claimable(digest_id: int, first_id: int, last_id: int, now: datetime, expired_leases: bool = True):
    return and_(
        Delivery.digest_id == digest_id,
        Delivery.id.between(first_id, last_id),
        Delivery.status.in_(OPEN),
        Delivery.next_attempt_at <= now,
        or_(Delivery.lease_expires_at.is_(None), Delivery.lease_expires_at < now) if expired_leases
        else Delivery.lease_owner.is_(None),
    )


def claim(digest_id: int, first_id: int, last_id: int, now: datetime, limit: int,
          marker: SentMarker | None = None) -> list[Claimed]:
    """Lease up to `limit` due rows of the range. Two workers never get the same row: PostgreSQL
    skips rows another transaction has locked (FOR UPDATE SKIP LOCKED); SQLite has one writer."""
    marker = marker or process_marker()
    # A dead worker's sent marks may still be in its journal: written first, or its rows wait.
    expired_leases = replay_journals(digest_id, first_id, last_id, now, marker)
    marker.begin_claim(db.engine, current_app.config["REDIS_URL"], now)
    candidates = (select(Delivery.id).where(_claimable(digest_id, first_id, last_id, now, expired_leases))
                  .order_by(Delivery.id).limit(limit))
    if db.engine.dialect.name == "postgresql":
        candidates = candidates.with_for_update(skip_locked=True)
    # A locking CTE (evaluated once, unlike `id IN (subquery)`), joined on the id alone: both for
    # reasons measured in docs/ARCHITECTURE.md, "Delivery".
    picked = candidates.cte("picked")
    lease = now + timedelta(seconds=current_app.config["DELIVERY_LEASE_SECONDS"])
    rows = db.session.execute(
        update(Delivery)
        .where(Delivery.id == picked.c.id)
        .values(lease_owner=queue.worker_id(), lease_expires_at=lease)
        .returning(Delivery.id, Delivery.subscriber_id, Delivery.attempts),
        execution_options={"synchronize_session": False},
    ).all()
    db.session.commit()
    return sorted((Claimed(r.id, r.subscriber_id, r.attempts, now) for r in rows), key=lambda c: c.id)


def replay_journals(digest_id: int, first_id: int, last_id: int, now: datetime,
                    marker: SentMarker | None = None) -> bool:
    """Before rows whose lease ran out are claimed again, write the sent marks their worker had
    journaled. False when the journal cannot be read now: such rows then wait (see claim)."""
    redis_url = current_app.config["REDIS_URL"]
    if not redis_url or not redis_wire.supported(redis_url) or db.engine.dialect.name != "postgresql":
        return True
    owners = dict(db.session.execute(select(Delivery.lease_owner, func.count()).where(
        Delivery.digest_id == digest_id, Delivery.id.between(first_id, last_id), Delivery.status.in_(OPEN),
        Delivery.lease_owner.is_not(None), Delivery.lease_expires_at < now).group_by(Delivery.lease_owner)).all())
    db.session.commit()
    if not owners:
        return True
    return (marker or process_marker()).replay_owners(db.engine, redis_url, owners)


def record_outcome(delivery_id: int, values: dict) -> None:
    """Record one outcome right away, only while this worker still holds the lease. A row cancelled
    meanwhile stays skipped, unless its message went out (sent, as the journal's marks say too)."""
    still = Delivery.status.in_(OPEN)
    if values.get("status") is DeliveryStatus.SENT:
        still = or_(still, Delivery.status == DeliveryStatus.SKIPPED)
    db.session.execute(
        update(Delivery)
        .where(Delivery.id == delivery_id, Delivery.lease_owner == queue.worker_id(), still)
        .values(lease_owner=None, lease_expires_at=None, **values),
        execution_options={"synchronize_session": False},
    )
    db.session.commit()


def release(delivery_ids: list[int]) -> None:
    """Give back this worker's leases on rows it will not send now (paused, cancelled): as they are."""
    if not delivery_ids:
        return
    db.session.execute(
        update(Delivery)
        .where(among(Delivery.id, delivery_ids), Delivery.lease_owner == queue.worker_id())
        .values(lease_owner=None, lease_expires_at=None),
        execution_options={"synchronize_session": False},
    )
    db.session.commit()


def release_expired(digest_id: int, now: datetime, marker: SentMarker | None = None) -> list[int] | None:
    """Free the open rows whose lease ran out (their worker died), its journal written first.
    The ids freed; None when the journal cannot be read now (the rows wait)."""
    expired = Delivery.lease_expires_at < now
    bounds = db.session.execute(select(func.min(Delivery.id), func.max(Delivery.id)).where(
        Delivery.digest_id == digest_id, Delivery.status.in_(OPEN), expired)).one()
    db.session.commit()
    if bounds[0] is None:
        return []
    if not replay_journals(digest_id, bounds[0], bounds[1], now, marker):
        return None
    freed = db.session.scalars(
        update(Delivery)
        .where(Delivery.digest_id == digest_id, Delivery.status.in_(OPEN), expired)
        .values(lease_owner=None, lease_expires_at=None)
        .returning(Delivery.id),
        execution_options={"synchronize_session": False},
    ).all()
    db.session.commit()
    return sorted(freed)
