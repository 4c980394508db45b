"""Progress of a send for people watching it: counts, the rate over the last minute, time left."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select

from ...extensions import db
from ...models import Delivery, DeliveryStatus, Digest, DigestStatus
from .control import status

RATE_WINDOW_SECONDS = 60


def progress(digest_id: int, now: datetime) -> dict:
    """status(), plus what is finished, the send rate over the last minute and the time left."""
    current = status(digest_id)
    started = db.session.scalar(select(Digest.sent_at).where(Digest.id == digest_id))
    recent = db.session.scalar(select(func.count()).select_from(Delivery).where(
        Delivery.digest_id == digest_id, Delivery.status == DeliveryStatus.SENT,
        Delivery.sent_at > now - timedelta(seconds=RATE_WINDOW_SECONDS)))
    # A send younger than the window is measured over its own age, or its first minute reads slow.
    elapsed = (now - started).total_seconds() if started else RATE_WINDOW_SECONDS
    rate = recent / max(min(elapsed, RATE_WINDOW_SECONDS), 1)
    remaining = current["pending"] + current["deferred"]
    eta = None  # not moving: not started, paused, stalled or cancelled
    if current["status"] == DigestStatus.DONE.value or (current["status"] == DigestStatus.SENDING.value
                                                         and not remaining):
        eta = 0
    elif current["status"] == DigestStatus.SENDING.value and rate:
        eta = round(remaining / rate)
    current.update(
        finished=current["sent"] + current["failed"] + current["skipped"],
        rate_per_second=round(rate, 2),
        eta_seconds=eta,
        label=current["status"].capitalize(),
        rate_text=f"{rate:,.1f}/s",
        eta_text=_duration(eta),
    )
    return current


def _duration(seconds: int | None) -> str:
    if seconds is None:
        return "—"
    hours, rest = divmod(int(seconds), 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {seconds:02d} s"
    return f"{seconds} s"
