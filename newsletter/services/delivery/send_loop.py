"""The worker's send loop: claim by claim, each reader re-checked, sent, and the outcome recorded.

The loop sees two seams, kept by the process's Mailer: a Messenger (the SMTP connection) and a
sent-mark store (SentMarker); the wires behind them live in newsletter/infra.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from flask import current_app
from sqlalchemy import select, update

from ... import metrics, queue
from ...errors import PermanentMailError, TransientMailError
from ...extensions import among, db
from ...infra.smtp import connection_from_config
from ...mail.compose import sender_address
from ...models import Delivery, DeliveryStatus, Digest, DigestStatus, Subscriber, SubscriberStatus
from .. import suppression
from .claims import Claimed, claim, record_outcome, release
from .control import finish_if_complete
from .leases import LeaseKeeper
from .sent_marks import SentMarker, process_marker
from .throttle import AdaptiveThrottle, backoff, rate_limiter

# Pause, cancel and unsubscribe take effect between two messages, this soon: a few cheap queries each time.
CHECK_SECONDS = 0.25


class Messenger(Protocol):
    """What the loop needs of a mail connection (infra.smtp.SmtpConnection is one). begin() puts a
    message on the wire, end() reads the relay's answer; `then` names the next recipient."""

    def begin(self, message: bytes, sender: str, recipient: str, then: str | None = None) -> None: ...

    def end(self) -> None: ...

    def send(self, message: bytes, sender: str, recipient: str, then: str | None = None) -> None: ...

    def close(self) -> None: ...


class Mailer:
    """What a worker process keeps between tasks: one messenger, one sent-mark store, the lease
    keeper, the send throttle and the rendered digests."""

    def __init__(self, marker: SentMarker | None = None):
        self.connection: Messenger | None = None
        self.smtp_url: str | None = None
        self.rendered: dict[tuple, object] = {}
        self.throttle = AdaptiveThrottle()
        self.marker = marker or SentMarker()
        self.leases = LeaseKeeper()

    def connection_for(self, app) -> Messenger:
        if self.connection is None or self.smtp_url != app.config["SMTP_URL"]:
            self.close_connection()
            self.smtp_url = app.config["SMTP_URL"]
            self.connection = connection_from_config(app.config)
        return self.connection

    def mark_sent(self, app, delivery: Claimed, now: datetime) -> None:
        if not self.marker.mark(db.engine, app.config["REDIS_URL"], delivery.id, now):
            record_outcome(delivery.id, {"status": DeliveryStatus.SENT, "sent_at": now,
                                         "attempts": delivery.attempts + 1})

    def rendered_digest(self, app, digest: Digest, now: datetime):
        """Rendered once per digest and process, then personalised per recipient."""
        from ...mail.digest import render_digest

        key = (app.config["SQLALCHEMY_DATABASE_URI"], digest.id)
        if key not in self.rendered:
            if len(self.rendered) > 4:
                self.rendered.clear()
            self.rendered[key] = render_digest(digest, now)
        return self.rendered[key]

    def close_connection(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None

    def close(self) -> None:
        self.close_connection()
        self.leases.close()
        try:
            if self.marker.pending:
                self.marker.flush(db.engine)
        finally:
            self.marker.close()


_mailer: tuple[int, Mailer] | None = None


def process_mailer() -> Mailer:
    """This process's Mailer. A forked child gets its own: its sockets and its journal key (which
    names the worker process) are never the parent's."""
    global _mailer
    if _mailer is None or _mailer[0] != os.getpid():
        _mailer = (os.getpid(), Mailer(process_marker()))
    return _mailer[1]


def send_range(digest_id: int, first_id: int, last_id: int, clock, mailer: Mailer | None = None) -> dict:
    """Send every due delivery of the range, claim by claim, until none is left or the digest is
    paused or cancelled. Returns what this call did, by outcome."""
    app = current_app._get_current_object()
    mailer = mailer or process_mailer()
    done = {"sent": 0, "deferred": 0, "failed": 0, "skipped": 0}
    limit = app.config["DELIVERY_CLAIM_SIZE"]
    sender = sender_address()
    limiter = rate_limiter(app)
    while True:
        digest = db.session.get(Digest, digest_id, populate_existing=True)
        if digest is None or digest.status is not DigestStatus.SENDING:
            break
        now = clock()
        claimed = claim(digest_id, first_id, last_id, now, limit, mailer.marker)
        if not claimed:
            break
        mailer.leases.hold(app, digest_id, [c.id for c in claimed], queue.worker_id(),
                           app.config["DELIVERY_LEASE_SECONDS"], clock)
        unsent: list[Claimed] = []
        try:
            unsent = _send_claimed(app, mailer, digest, claimed, clock, limiter, sender, done)
        finally:
            mailer.leases.release()
            release([c.id for c in unsent])  # paused or cancelled: left as they are, for anyone
            mailer.marker.flush(db.engine)  # the claim's journaled marks, written together
        if len(claimed) < limit:
            break  # the range had no more due rows: done at once, rather than after one more claim
    for outcome, count in done.items():
        metrics.record_delivery(outcome, count)
    finish_if_complete(digest_id, clock())
    return done


def _send_claimed(app, mailer: Mailer, digest: Digest, claimed: list[Claimed], clock, limiter, sender: str,
                  done: dict) -> list[Claimed]:
    """Send the claim's messages; the rows left unsent when the digest stopped being sent."""
    rendered = mailer.rendered_digest(app, digest, clock())
    people = _recipients([c.subscriber_id for c in claimed])
    sendable = []
    for delivery in claimed:
        person = people.get(delivery.subscriber_id)
        if person is None or person.status is not SubscriberStatus.CONFIRMED or person.suppressed:
            record_outcome(delivery.id, {"status": DeliveryStatus.SKIPPED})
            done["skipped"] += 1
        else:
            sendable.append((delivery, person))
    watch = _Watch(digest.id, mailer.leases)

    def wanted_after(index: int) -> int | None:
        return next((i for i in range(index + 1, len(sendable)) if sendable[i][0].id not in watch.gone), None)

    def build(index: int, now: datetime) -> bytes:
        delivery, person = sendable[index]
        return rendered.message_bytes(delivery.subscriber_id, person.email, person.name, now, for_data=True)

    ahead = None  # (index, the message): built while the relay was reading the one before
    for index, (delivery, person) in enumerate(sendable):
        mailer.throttle.wait()
        limiter.acquire()
        if watch.due() and not watch.check(sendable[index:]):
            mailer.close_connection()  # (an envelope sent ahead for the next reader is never filled)
            return [d for d, _ in sendable[index:]]
        if delivery.id in watch.gone:  # unsubscribed or suppressed since the claim
            record_outcome(delivery.id, {"status": DeliveryStatus.SKIPPED})
            done["skipped"] += 1
            continue
        # Who comes next is known, and is sent to next whatever happens to this one: the
        # connection sends their envelope along with this message (one round trip per email).
        following = wanted_after(index)
        if mailer.throttle.pause or app.config["SEND_RATE"] > 0:
            following = None  # waits to come: no reader's envelope is left open at the relay meanwhile
        now = clock()
        try:
            message = ahead[1] if ahead is not None and ahead[0] == index else build(index, now)
            ahead = None
            connection = mailer.connection_for(app)
            connection.begin(message, sender, person.email,
                             then=sendable[following][1].email if following is not None else None)
            if following is not None:
                try:
                    ahead = (following, build(following, now))
                except Exception:  # noqa: BLE001  (built again, and its error raised, in its own turn)
                    ahead = None  # first, this message's answer, so that it is marked as it went
            connection.end()
        except TransientMailError as error:
            mailer.throttle.temporary_failure(str(error))
            done[_defer(delivery, person, now, str(error))] += 1
        except PermanentMailError as error:
            mailer.throttle.success()
            _fail(delivery, person, now, error)
            done["failed"] += 1
        else:
            mailer.throttle.success()
            mailer.mark_sent(app, delivery, now)
            done["sent"] += 1
    return []


class _Watch:
    """The cheap look, every CHECK_SECONDS between two messages, at what may have changed since the
    claim: the digest paused or cancelled, readers unsubscribed or suppressed, the lease at risk."""

    def __init__(self, digest_id: int, leases):
        self.digest_id = digest_id
        self.leases = leases
        self.gone: set[int] = set()  # delivery ids no longer to be sent
        self.last = time.monotonic()

    def due(self) -> bool:
        return time.monotonic() - self.last >= CHECK_SECONDS

    def check(self, remaining: list[tuple[Claimed, _Person]]) -> bool:
        """False: stop this claim now."""
        self.last = time.monotonic()
        if not self.leases.safe():
            return False
        db.session.commit()  # a new snapshot (SQLite keeps a read transaction's view)
        if db.session.scalar(select(Digest.status).where(Digest.id == self.digest_id)) is not DigestStatus.SENDING:
            return False
        left = [(d, p) for d, p in remaining if d.id not in self.gone]
        if left:
            still = set(db.session.scalars(select(Subscriber.id).where(
                among(Subscriber.id, [d.subscriber_id for d, _ in left]),
                Subscriber.status == SubscriberStatus.CONFIRMED)))
            blocked = suppression.suppressed_hmacs([p.hmac for _, p in left])
            self.gone.update(d.id for d, p in left if d.subscriber_id not in still or p.hmac in blocked)
        db.session.commit()
        return True


@dataclass
class _Person:
    email: str
    name: str | None
    status: SubscriberStatus
    suppressed: bool
    hmac: str  # of the address, for suppression checks


def _recipients(subscriber_ids: list[int]) -> dict[int, _Person]:
    """Who the claimed rows are for, re-checked now: an unsubscribe mid-send is honoured."""
    rows = db.session.execute(
        select(Subscriber.id, Subscriber.email, Subscriber.name, Subscriber.status)
        .where(among(Subscriber.id, subscriber_ids))
    ).all()
    hmacs = {row.id: suppression.address_hmac(row.email) for row in rows}
    blocked = suppression.suppressed_hmacs(list(hmacs.values()))
    return {row.id: _Person(row.email, row.name, row.status, hmacs[row.id] in blocked, hmacs[row.id]) for row in rows}


def is_no_such_user(error: PermanentMailError) -> bool:
    text_ = str(error)
    return error.code in (550, 551, 553) and ("5.1.1" in text_ or "5.1.0" in text_ or "no such user" in text_.lower()
                                              or "unknown user" in text_.lower() or "user unknown" in text_.lower())


def _defer(delivery: Claimed, person: _Person, now: datetime, error: str) -> str:
    attempts = delivery.attempts + 1
    first_try = db.session.scalar(select(Digest.sent_at).join(Delivery, Delivery.digest_id == Digest.id)
                                  .where(Delivery.id == delivery.id)) or now
    if now - first_try > timedelta(seconds=current_app.config["DELIVERY_EXPIRY_SECONDS"]):
        record_outcome(delivery.id, {"status": DeliveryStatus.FAILED, "attempts": attempts,
                                     "last_error": f"expired after {attempts} attempts: {error}"[:500]})
        return "failed"
    record_outcome(delivery.id, {"status": DeliveryStatus.DEFERRED, "attempts": attempts, "last_error": error[:500],
                                 "next_attempt_at": now + backoff(attempts,
                                                                  current_app.config["DELIVERY_RETRY_BASE_SECONDS"])})
    return "deferred"


def _fail(delivery: Claimed, person: _Person, now: datetime, error: PermanentMailError) -> None:
    if is_no_such_user(error):
        suppression.suppress(person.email, "hard-bounce", now)
        db.session.execute(update(Subscriber).where(Subscriber.id == delivery.subscriber_id)
                           .values(status=SubscriberStatus.BOUNCED))
    record_outcome(delivery.id, {"status": DeliveryStatus.FAILED, "attempts": delivery.attempts + 1,
                                 "last_error": str(error)[:500]})
