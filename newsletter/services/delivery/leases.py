"""Leases: short, and renewed by a thread of the live worker, so a dead worker's claim is free again
within a lease (30 s by default) while a live one keeps its claim however slow one SMTP exchange is.

The thread renews every lease/3 seconds on a database connection of its own; the send loop stops a
claim whose lease it can no longer vouch for (two renewals missed), so nobody else can have taken it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import update

from ...extensions import db
from ...models import Delivery
from .claims import OPEN

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Held:
    app: object  # the Flask app: the thread works in its context (engine, clock)
    digest_id: int
    first_id: int
    last_id: int
    owner: str
    seconds: float
    clock: Callable[[], datetime]


def renew(engine, digest_id: int, first_id: int, last_id: int, owner: str, until: datetime) -> int:
    """Move the expiry of the open rows `owner` holds in the id range to `until`, on a connection of its own."""
    with engine.begin() as connection:
        return connection.execute(
            update(Delivery)
            .where(Delivery.digest_id == digest_id, Delivery.status.in_(OPEN),
                   Delivery.id.between(first_id, last_id), Delivery.lease_owner == owner)
            .values(lease_expires_at=until)
        ).rowcount


class LeaseKeeper:
    """Keeps the leases of the claim in hand alive, from a daemon thread started on first use."""

    def __init__(self):
        self._held: _Held | None = None
        self._renewed = 0.0  # time.monotonic() of the claim or of the last renewal that worked
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None

    def hold(self, app, digest_id: int, ids: list[int], owner: str, seconds: float, clock) -> None:
        """The claim just made (its leases run `seconds` from now): keep it until release()."""
        with self._lock:
            self._held = _Held(app, digest_id, min(ids), max(ids), owner, seconds, clock)
            self._renewed = time.monotonic()
        if self._thread is None or not self._thread.is_alive():
            self._closed = False
            self._thread = threading.Thread(target=self._run, name="delivery-leases", daemon=True)
            self._thread.start()
        self._wake.set()  # the thread waits lease/3 from now

    def release(self) -> None:
        with self._lock:
            self._held = None

    def safe(self) -> bool:
        """Whether the lease is surely still ours: renewed less than two thirds of a lease ago."""
        with self._lock:
            held, renewed = self._held, self._renewed
        return held is not None and time.monotonic() - renewed < held.seconds * 2 / 3

    def close(self) -> None:
        self._closed = True
        self.release()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        self._thread = None

    def _run(self) -> None:
        interval = None
        while not self._closed:
            self._wake.wait(interval)
            if self._wake.is_set():
                self._wake.clear()
                with self._lock:
                    held = self._held
                interval = held.seconds / 3 if held else None
                continue  # a new claim (or close): wait a third of its lease first
            with self._lock:
                held = self._held
            if held is None:
                interval = None
                continue
            self._renew(held)

    def _renew(self, held: _Held) -> None:
        started = time.monotonic()
        try:
            with held.app.app_context():
                renew(db.engine, held.digest_id, held.first_id, held.last_id, held.owner,
                      held.clock() + timedelta(seconds=held.seconds))
        except Exception as error:  # noqa: BLE001  (the send loop stops the claim when renewals fail)
            log.warning("could not renew the leases of digest %d rows %d-%d: %s", held.digest_id, held.first_id,
                        held.last_id, error)
            return
        with self._lock:
            if self._held is held:
                self._renewed = started
