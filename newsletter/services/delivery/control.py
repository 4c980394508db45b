"""Operator control and progress: counts and status, pause, resume, cancel, done, and the sweeper."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import and_, func, select, update

from ... import metrics, queue
from ...errors import InvalidInput
from ...extensions import among, db
from ...models import Delivery, DeliveryStatus, Digest, DigestStatus
from .claims import OPEN, release_expired
from .fanout import enqueue_ranges


def counts(digest_id: int) -> dict:
    rows = db.session.execute(
        select(Delivery.status, func.count()).where(Delivery.digest_id == digest_id).group_by(Delivery.status)
    ).all()
    by_status = {status.value: n for status, n in rows}
    result = {name.value: by_status.get(name.value, 0) for name in DeliveryStatus}
    result["total"] = sum(by_status.values())
    return result


def status(digest_id: int) -> dict:
    digest = db.session.get(Digest, digest_id, populate_existing=True)
    if digest is None:
        raise InvalidInput("digest", f"No digest with id {digest_id}.")
    c = counts(digest_id)
    return {"status": digest.status.value, "total": c["total"], "pending": c["pending"], "sent": c["sent"],
            "deferred": c["deferred"], "failed": c["failed"], "skipped": c["skipped"]}


def finish_if_complete(digest_id: int, now: datetime) -> bool:
    """`done` only when nothing is pending or deferred any more."""
    # EXISTS, not COUNT: every range task ends here, and half-way through a big digest a count
    # visits tens of thousands of index entries to answer a yes/no question.
    still_open = db.session.scalar(
        select(select(Delivery.id).where(Delivery.digest_id == digest_id, Delivery.status.in_(OPEN)).exists())
    )
    if still_open:
        return False
    finished = db.session.execute(
        update(Digest).where(Digest.id == digest_id, Digest.status == DigestStatus.SENDING)
        .values(status=DigestStatus.DONE)
    ).rowcount
    db.session.commit()
    return bool(finished)


def _transition(digest_id: int, from_states, to_state: DigestStatus) -> None:
    digest = db.session.get(Digest, digest_id)
    if digest is None:
        raise InvalidInput("digest", f"No digest with id {digest_id}.")
    moved = db.session.execute(
        update(Digest).where(Digest.id == digest_id, Digest.status.in_(from_states)).values(status=to_state)
    ).rowcount
    if not moved:
        db.session.rollback()
        allowed = ", ".join(s.value for s in from_states)
        raise InvalidInput("digest", f"Digest {digest_id} is {digest.status.value}; it must be {allowed}.")


def pause(digest_id: int, now: datetime) -> None:
    _transition(digest_id, [DigestStatus.SENDING], DigestStatus.PAUSED)
    db.session.commit()


def resume(digest_id: int, now: datetime) -> None:
    _transition(digest_id, [DigestStatus.PAUSED], DigestStatus.SENDING)
    db.session.commit()
    enqueue_ranges(digest_id, only_open=True)


def cancel(digest_id: int, now: datetime) -> None:
    """Every open row ends skipped, leased ones too: their worker sees the cancel before its next
    message and stops (a message already on its way is still marked sent: it went)."""
    release_expired(digest_id, now)  # what dead workers had sent (their journals), before the rest is skipped
    _transition(digest_id, [DigestStatus.SENDING, DigestStatus.PAUSED, DigestStatus.DRAFT,
                            DigestStatus.SCHEDULED], DigestStatus.CANCELLED)
    skipped = db.session.execute(
        update(Delivery)
        .where(Delivery.digest_id == digest_id, Delivery.status.in_(OPEN))
        .values(status=DeliveryStatus.SKIPPED, last_error="digest cancelled"),
        execution_options={"synchronize_session": False},
    ).rowcount
    db.session.commit()
    metrics.record_delivery("skipped", skipped)


def sweep(now: datetime) -> int:
    """Hand out again, for each digest being sent, the due rows no live worker holds: at once those
    whose lease ran out (their worker died; its journal written first); all of them when the bulk
    queue is empty (their tasks were lost: Redis flushed or restarted, broker down at fan-out), or,
    when the broker cannot tell, once nothing has moved for DELIVERY_STALL_SECONDS. Never while the
    queue still holds tasks: a long, slow send gets no duplicates. Returns the ranges handed out."""
    handed = 0
    waiting = _UNASKED
    for digest_id in list(db.session.scalars(select(Digest.id).where(Digest.status == DigestStatus.SENDING))):
        if finish_if_complete(digest_id, now):
            continue
        freed = release_expired(digest_id, now)
        if not db.session.scalar(select(select(Delivery.id).where(_free(digest_id, now)).exists())):
            continue
        if waiting is _UNASKED:
            waiting = queue.waiting_tasks(queue.BULK_QUEUE)  # once per sweep, and only when it matters
        if waiting == 0 or (waiting is None and _stalled(digest_id, now)):
            handed += enqueue_ranges(digest_id, where=_free(digest_id, now))
        elif freed:
            handed += enqueue_ranges(digest_id, where=among(Delivery.id, freed))
    return handed


_UNASKED = object()


def _free(digest_id: int, now: datetime):
    """Rows due now that no worker holds."""
    return and_(Delivery.digest_id == digest_id, Delivery.status.in_(OPEN), Delivery.next_attempt_at <= now,
                Delivery.lease_owner.is_(None))


def _stalled(digest_id: int, now: datetime) -> bool:
    """No live lease, and nothing sent, for DELIVERY_STALL_SECONDS (counted from the start)."""
    if db.session.scalar(select(select(Delivery.id).where(
            Delivery.digest_id == digest_id, Delivery.lease_expires_at > now).exists())):
        return False
    started = db.session.scalar(select(Digest.sent_at).where(Digest.id == digest_id)) or now
    last_sent = db.session.scalar(select(func.max(Delivery.sent_at)).where(Delivery.digest_id == digest_id))
    moved = max(started, last_sent) if last_sent else started
    return now - moved > timedelta(seconds=current_app.config["DELIVERY_STALL_SECONDS"])


def wait_for(digest_id: int, on_progress, poll_seconds: float = 0.5, timeout: float | None = None) -> dict:
    """Poll status until the digest is no longer sending; call on_progress(status) each time."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        db.session.rollback()  # see other transactions' commits
        current = status(digest_id)
        on_progress(current)
        if current["status"] not in (DigestStatus.SENDING.value,):
            return current
        if deadline is not None and time.monotonic() > deadline:
            return current
        time.sleep(poll_seconds)
