"""One digest to N confirmed subscribers through real worker processes, judged by what the SMTP
server received: every expected recipient exactly once, no one else, the same Message-ID on any
duplicate that SMTP's own window allows, and status counts that match."""

from __future__ import annotations

from collections import Counter

from sqlalchemy import func, select

from newsletter.clock import utcnow
from newsletter.extensions import db
from newsletter.models import Delivery, Subscriber, SubscriberStatus
from newsletter.services import delivery

from ..integration.test_delivery import make_digest
from .harness import wait_until

N = 300
# Small batches and claims, so that a few hundred readers make several of each. Lease, sweep and
# stall keep their defaults: recovery must not depend on tuned timeouts.
SMALL = {"DELIVERY_BATCH_SIZE": 50, "DELIVERY_CLAIM_SIZE": 10, "OUTBOX_SWEEP_SECONDS": 30}
DEFAULTS: dict = {}  # every delivery setting as shipped


class Send:
    """One digest to N confirmed subscribers, on a database and a Redis broker of its own."""

    def __init__(self, harness, redis_db: int, n: int = N, settings: dict = SMALL, broker: str | None = None):
        self.harness = harness
        self.settings = settings
        self.database = harness.postgres()
        self.broker = broker or harness.redis(redis_db)
        self.app = harness.app(self.database, self.broker, **settings)
        self.emails = [f"r{i:04d}@example.com" for i in range(n)]
        with self.app.app_context():
            now = utcnow()
            db.session.execute(Subscriber.__table__.insert(), [
                {"email": e, "status": SubscriberStatus.CONFIRMED, "created_at": now} for e in self.emails])
            db.session.commit()
            self.digest_id = make_digest(lambda: now)

    def worker(self, **extra):
        return self.harness.worker(self.database, self.broker, **{**self.settings, **extra})

    def beat(self):
        return self.harness.beat(self.database, self.broker, **self.settings)

    def start(self) -> int:
        with self.app.app_context():
            return delivery.start_sending(self.digest_id, utcnow())

    def status(self) -> dict:
        with self.app.app_context():
            return delivery.status(self.digest_id)

    def leases(self) -> int:
        """Rows a worker holds right now."""
        with self.app.app_context():
            return db.session.scalar(select(func.count()).select_from(Delivery)
                                     .where(Delivery.lease_owner.is_not(None)))

    def wait_done(self, timeout=120) -> dict:
        return wait_until(lambda: (s := self.status())["status"] == "done" and s, timeout, "the digest to be done")

    def received(self) -> Counter:
        return Counter(a for m in self.harness.smtp.received for a in m.recipients)

    def assert_each_exactly_once(self, allowed_duplicates=()):
        got = self.received()
        assert set(got) == set(self.emails), set(got) ^ set(self.emails)
        duplicated = {a for a, n in got.items() if n > 1}
        assert duplicated <= set(allowed_duplicates), duplicated
        for address in duplicated:  # the SMTP window: the same message again, never a new one
            ids = {m.message["Message-ID"] for m in self.harness.smtp.to(address)}
            assert len(ids) == 1
        final = self.status()
        assert final["sent"] == len(self.emails) and final["pending"] == final["deferred"] == final["failed"] == 0
