"""The delivery engine: every confirmed, non-suppressed subscriber gets a digest exactly once.

State of a Delivery row (one per digest and subscriber, UNIQUE):

    pending --claim (lease)--> SMTP --250--> sent
       ^                        |--4xx / dropped line--> deferred (next_attempt_at: back-off + jitter)
       |                        |--5xx--> failed (and "no such user" suppresses the address)
       |                        '--unsubscribed / suppressed since the fan-out--> skipped
       '-- lease expired (worker died), or deferred and due: claimable again

Fan-out writes every row in one INSERT ... SELECT, in the transaction that moves the digest to
`sending`; tasks then name keyset ranges of delivery ids. The database is the truth: a lost task
or a dead worker only delays rows, which the sweeper hands out again.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import psycopg
from flask import current_app
from psycopg import pq
from sqlalchemy import and_, func, insert, literal, or_, select, text, update

from ..errors import InvalidInput, PermanentMailError, TransientMailError
from ..extensions import among, db
from ..mail.compose import sender_address
from ..mail.transport import SmtpConnection, parse_smtp_urls
from ..models import (
    Delivery,
    DeliveryStatus,
    Digest,
    DigestStatus,
    Subscriber,
    SubscriberStatus,
    UTCDateTime,
)
from ..queue import SEND_BATCH, enqueue, worker_id
from . import resp, suppression
from .resp import RespClient
from .throttle import AdaptiveThrottle, backoff, rate_limiter

log = logging.getLogger(__name__)

OPEN = (DeliveryStatus.PENDING, DeliveryStatus.DEFERRED)


@dataclass
class Claimed:
    id: int
    subscriber_id: int
    attempts: int
    created: datetime


# --- fan-out -------------------------------------------------------------------------------


def start_sending(digest_id: int, now: datetime) -> int:
    """Move a draft (or scheduled) digest to `sending` and write its deliveries. Returns their count."""
    digest = db.session.get(Digest, digest_id)
    if digest is None:
        raise InvalidInput("digest", f"No digest with id {digest_id}.")
    moved = db.session.execute(
        update(Digest)
        .where(Digest.id == digest_id, Digest.status.in_([DigestStatus.DRAFT, DigestStatus.SCHEDULED]))
        .values(status=DigestStatus.SENDING, sent_at=now)
    ).rowcount
    if not moved:
        db.session.rollback()
        raise InvalidInput("digest", f"Digest {digest_id} is {digest.status.value}; only a draft can be sent.")
    # One set-based statement, never a Python loop: 100,000 rows in one round trip.
    db.session.execute(
        insert(Delivery).from_select(
            ["digest_id", "subscriber_id", "status", "attempts", "next_attempt_at"],
            select(
                literal(digest_id),
                Subscriber.id,
                literal(DeliveryStatus.PENDING.value),
                literal(0),
                literal(now, UTCDateTime()),
            ).where(Subscriber.status == SubscriberStatus.CONFIRMED),
        )
    )
    db.session.commit()
    if db.engine.dialect.name == "postgresql":
        # Statistics that know the new rows, before any worker plans a claim or a count on them
        # (autovacuum would get there only after a minute or so). Tens of milliseconds.
        db.session.execute(text("ANALYZE delivery"))
        db.session.commit()
    # (Not the INSERT's rowcount: drivers may not report it for INSERT ... SELECT.)
    total = db.session.scalar(select(func.count()).select_from(Delivery).where(Delivery.digest_id == digest_id))
    enqueue_ranges(digest_id)
    return total


def batch_ranges(digest_id: int, only_open: bool = False) -> list[tuple[int, int]]:
    """Keyset ranges of a few hundred delivery ids each, from one query (window function)."""
    size = current_app.config["DELIVERY_BATCH_SIZE"]
    condition = Delivery.digest_id == digest_id
    if only_open:
        condition = and_(condition, Delivery.status.in_(OPEN))
    numbered = select(Delivery.id, func.row_number().over(order_by=Delivery.id).label("n")).where(condition).subquery()
    starts = list(db.session.scalars(select(numbered.c.id).where((numbered.c.n - 1) % size == 0).order_by(numbered.c.id)))
    if not starts:
        return []
    last = db.session.scalar(select(func.max(Delivery.id)).where(condition))
    ends = [start - 1 for start in starts[1:]] + [last]
    return list(zip(starts, ends))


def enqueue_ranges(digest_id: int, only_open: bool = False) -> int:
    ranges = batch_ranges(digest_id, only_open)
    for first, last in ranges:
        if not enqueue(SEND_BATCH, digest_id, first, last):
            break  # broker down: the sweeper hands the rows out once it is back
    return len(ranges)


# --- claiming and sending -------------------------------------------------------------------


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
    # A dead worker's sent marks may still be in its journal: written first, or its rows wait.
    expired_leases = replay_journals(digest_id, first_id, last_id, now, marker)
    candidates = (select(Delivery.id).where(_claimable(digest_id, first_id, last_id, now, expired_leases))
                  .order_by(Delivery.id).limit(limit))
    if db.engine.dialect.name == "postgresql":
        candidates = candidates.with_for_update(skip_locked=True)
    # A CTE, not `id IN (subquery)`: PostgreSQL may run an IN-subquery more than once per UPDATE,
    # and with SKIP LOCKED each run can pick other rows, claiming more than `limit`. A locking CTE
    # is evaluated exactly once.
    # The UPDATE joins on the id alone: the locked rows cannot change before it runs, and with
    # the conditions repeated here PostgreSQL, when its statistics predate the fan-out (a new
    # digest's rows always do), joined every row of the range to the CTE: 745 ms per claim of
    # 250 out of 20,000 instead of 2.5 ms.
    picked = candidates.cte("picked")
    lease = now + timedelta(seconds=current_app.config["DELIVERY_LEASE_SECONDS"])
    rows = db.session.execute(
        update(Delivery)
        .where(Delivery.id == picked.c.id)
        .values(lease_owner=worker_id(), lease_expires_at=lease)
        .returning(Delivery.id, Delivery.subscriber_id, Delivery.attempts),
        execution_options={"synchronize_session": False},
    ).all()
    db.session.commit()
    return sorted((Claimed(r.id, r.subscriber_id, r.attempts, now) for r in rows), key=lambda c: c.id)


def _finish(delivery_id: int, values: dict) -> None:
    """Record one outcome right away, only while this worker still holds the lease."""
    db.session.execute(
        update(Delivery)
        .where(Delivery.id == delivery_id, Delivery.lease_owner == worker_id())
        .values(lease_owner=None, lease_expires_at=None, **values),
        execution_options={"synchronize_session": False},
    )
    db.session.commit()


def is_no_such_user(error: PermanentMailError) -> bool:
    text_ = str(error)
    return error.code in (550, 551, 553) and ("5.1.1" in text_ or "5.1.0" in text_ or "no such user" in text_.lower()
                                              or "unknown user" in text_.lower() or "user unknown" in text_.lower())


JOURNAL_KEY = "newsletter:sent:"  # + the lease owner: the rows it has sent and not yet written


class SentMarker:
    """Marks rows sent on PostgreSQL, each durable against a worker crash from its 250 on.

    With Redis (a redis:// REDIS_URL, as production has for its broker), the delivery id goes to
    a Redis list that belongs to this worker right after the relay's 250 (without waiting for
    Redis's answer: see _journal); at the end of each claim one UPDATE writes the claim's sent
    rows and the list is emptied. A worker
    that dies in between leaves its list behind, and its lease runs out; whoever claims those
    rows again first writes what the list says was sent (`replay_journals`), so none of it is
    sent twice. If Redis loses the list (flushed, restarted) while the worker lives, the worker
    still writes the rows from memory. Only losing both at once could repeat up to one claim's
    messages, as a database crash can with asynchronous commit.

    Without Redis, or while Redis does not answer (then for JOURNAL_PAUSE seconds, so that a Redis
    out of reach costs one connection attempt, not one per email), each row is written right
    after its 250 in a round trip of its own: autocommit with synchronous_commit off, so no BEGIN/COMMIT round trips
    and no fsync wait. On 2 cores that transaction costs the database ~100 us per email, over a
    quarter of what the whole send costs, against ~30 us of Redis's time for the list.

    Statements go straight through libpq (psycopg's pgconn), prepared, with text parameters: a
    third of the worker's CPU that cursor.execute() costs. On SQLite the ORM path marks each row.
    """

    JOURNAL_PAUSE = 30

    STATEMENTS = {
        b"mark_sent_row": b"UPDATE delivery SET status = 'sent', sent_at = $1, attempts = attempts + 1, "
                          b"lease_owner = NULL, lease_expires_at = NULL WHERE id = $2 AND lease_owner = $3",
        # Only rows still open and leased by the worker that sent them: writing twice changes nothing.
        b"mark_sent_rows": b"UPDATE delivery AS d SET status = 'sent', sent_at = v.sent_at, "
                           b"attempts = d.attempts + 1, lease_owner = NULL, lease_expires_at = NULL "
                           b"FROM unnest($1::bigint[], $2::timestamptz[]) AS v(id, sent_at) "
                           b"WHERE d.id = v.id AND d.lease_owner = $3 AND d.status IN ('pending', 'deferred')",
    }

    def __init__(self):
        self.raw = None
        self.pgconn = None
        self.url = None
        self.journal: RespClient | None = None
        self.journal_url: str | None = None
        self.push = b""  # RPUSH and this worker's key, encoded once
        self.push_owner: str | None = None
        self.pending: list[tuple[int, datetime]] = []  # journaled, not yet written
        self.journal_paused_until = 0.0

    def mark(self, engine, redis_url: str | None, delivery_id: int, sent_at: datetime) -> bool:
        """False: not PostgreSQL, the caller marks the row itself."""
        if engine.dialect.name != "postgresql":
            return False
        if redis_url and (redis_url != self.journal_url or self.push_owner != worker_id()):
            self._use_journal(redis_url)
        if (self.journal is not None and time.monotonic() >= self.journal_paused_until
                and self._journal(engine, delivery_id, sent_at)):
            return True
        self._execute(engine, b"mark_sent_row", [_text(sent_at), b"%d" % delivery_id, worker_id().encode()])
        return True

    def _use_journal(self, redis_url: str) -> None:
        if self.journal is not None:
            self.journal.close()
        self.journal_url = redis_url
        self.journal = RespClient(redis_url) if resp.supported(redis_url) else None
        self.journal_paused_until = 0.0
        self.push_owner = worker_id()
        self.push = resp.encode(("RPUSH", JOURNAL_KEY + self.push_owner))[4:]  # the command, less its count

    def _journal(self, engine, delivery_id: int, sent_at: datetime) -> bool:
        """The mark goes to Redis without waiting for Redis's answer (the answer to the mark before
        it is read first): the worker waits on the relay only. Durable all the same once sent:
        an unanswered command is one Redis has not read yet only while nothing waits unread in
        the worker's socket, and then a killed worker's socket closes gently and Redis still
        reads it (a reset, which could drop it, happens only when data was left unread)."""
        value = b"%d %d" % (delivery_id, _micros(sent_at))
        try:
            self.journal.post(b"*3\r\n" + self.push + b"$%d\r\n%s\r\n" % (len(value), value))
        except resp.RespError as error:
            # This mark, or the one before it, may not be in the journal: write all that is
            # pending now, this row with them. If the database fails too, they stay pending (in
            # memory) for the next try, and the error goes up.
            log.warning("sent journal unavailable (%s): marking rows one by one for %d s", error,
                        self.JOURNAL_PAUSE)
            self.journal_paused_until = time.monotonic() + self.JOURNAL_PAUSE
            self.pending.append((delivery_id, sent_at))
            self.flush(engine)
            return True
        self.pending.append((delivery_id, sent_at))
        return True

    def flush(self, engine) -> None:
        """Write the journaled rows (end of a claim). Kept for the next try if that fails."""
        if not self.pending:
            return
        self._execute(engine, b"mark_sent_rows", [*_arrays(self.pending), worker_id().encode()])
        self.pending.clear()
        if time.monotonic() < self.journal_paused_until:
            return  # Redis just failed: what it may still hold names rows no longer open
        try:
            self.journal.command("DEL", JOURNAL_KEY + worker_id())
        except resp.RespError:
            pass  # what is left names rows no longer open: replaying it changes nothing

    def replay(self, engine, redis_url: str, owner: str) -> int:
        """Write what a worker whose lease ran out had journaled. Raises resp.RespError."""
        client = self._client(redis_url)
        entries = client.command("LRANGE", JOURNAL_KEY + owner, 0, -1) or []
        if entries:
            marks = [(int(i), _from_micros(int(m))) for i, m in (entry.split() for entry in entries)]
            self._execute(engine, b"mark_sent_rows", [*_arrays(marks), owner.encode()])
        client.command("DEL", JOURNAL_KEY + owner)
        return len(entries)

    def _client(self, redis_url: str) -> RespClient:
        if redis_url != self.journal_url:
            self._use_journal(redis_url)
        return self.journal

    def _execute(self, engine, name: bytes, params: list[bytes]) -> None:
        for attempt in (1, 2):
            if self.pgconn is None or self.url != str(engine.url):
                self._open(engine)
            result = self.pgconn.exec_prepared(name, params)
            if result.status == pq.ExecStatus.COMMAND_OK:
                return
            message = pq.error_message(result) or pq.error_message(self.pgconn)
            if self.pgconn.status == pq.ConnStatus.OK:
                raise psycopg.DatabaseError(f"{name.decode()}: {message}")
            self.close()  # the connection died (database restart): once more on a new one
            if attempt == 2:
                raise psycopg.OperationalError(f"{name.decode()}: {message}")

    def _open(self, engine) -> None:
        self.close()
        self.url = str(engine.url)
        self.raw = engine.raw_connection()
        driver = self.raw.driver_connection
        driver.autocommit = True
        driver.execute("SET synchronous_commit TO OFF")
        self.pgconn = driver.pgconn
        for name, sql in self.STATEMENTS.items():
            result = self.pgconn.prepare(name, sql)
            if result.status != pq.ExecStatus.COMMAND_OK:
                raise psycopg.DatabaseError(pq.error_message(result))

    def close(self) -> None:
        if self.raw is not None:
            self.raw.invalidate()  # never back to the pool: its session settings are ours alone
        self.raw = self.pgconn = None
        if self.journal is not None:
            self.journal.close()


def _text(moment: datetime) -> bytes:
    return moment.isoformat().encode("ascii")


def _micros(moment: datetime) -> int:
    return round(moment.timestamp() * 1_000_000)


def _from_micros(micros: int) -> datetime:
    return datetime.fromtimestamp(micros / 1_000_000, tz=timezone.utc)


def _arrays(marks: list[tuple[int, datetime]]) -> tuple[bytes, bytes]:
    """bigint[] and timestamptz[] as PostgreSQL's text input reads them."""
    return (b"{" + b",".join(b"%d" % i for i, _ in marks) + b"}",
            b"{" + b",".join(b'"' + _text(t) + b'"' for _, t in marks) + b"}")


def replay_journals(digest_id: int, first_id: int, last_id: int, now: datetime,
                    marker: SentMarker | None = None) -> bool:
    """Before rows whose lease ran out are claimed again, write the sent marks their worker had
    journaled. False when the journal cannot be read (or Redis failed less than JOURNAL_PAUSE
    seconds ago): such rows then wait (see claim)."""
    redis_url = current_app.config["REDIS_URL"]
    if not redis_url or not resp.supported(redis_url) or db.engine.dialect.name != "postgresql":
        return True
    owners = list(db.session.scalars(select(Delivery.lease_owner).distinct().where(
        Delivery.digest_id == digest_id, Delivery.id.between(first_id, last_id), Delivery.status.in_(OPEN),
        Delivery.lease_owner.is_not(None), Delivery.lease_expires_at < now)))
    db.session.commit()
    if not owners:
        return True
    marker = marker or process_mailer().marker
    if redis_url != marker.journal_url:
        marker._use_journal(redis_url)  # (the pause below is that of one Redis)
    if time.monotonic() < marker.journal_paused_until:
        return False
    try:
        for owner in owners:
            if owner == worker_id():
                marker.flush(db.engine)  # our own, from a claim that stopped half-way
            replayed = marker.replay(db.engine, redis_url, owner)
            if replayed:
                log.info("wrote %d sent marks journaled by %s, whose lease ran out", replayed, owner)
    except resp.RespError as error:
        log.warning("cannot read the sent journal (%s): rows of expired leases wait", error)
        marker.journal_paused_until = time.monotonic() + marker.JOURNAL_PAUSE
        return False
    return True


class Mailer:
    """What a worker process keeps between tasks: one SMTP connection, one connection to mark rows
    sent, and the rendered digests."""

    def __init__(self):
        self.connection: SmtpConnection | None = None
        self.smtp_url: str | None = None
        self.rendered: dict[tuple, object] = {}
        self.throttle = AdaptiveThrottle()
        self.marker = SentMarker()

    def connection_for(self, app) -> SmtpConnection:
        if self.connection is None or self.smtp_url != app.config["SMTP_URL"]:
            self._close_smtp()
            self.smtp_url = app.config["SMTP_URL"]
            self.connection = SmtpConnection(parse_smtp_urls(self.smtp_url), timeout=app.config["SMTP_TIMEOUT"])
        return self.connection

    def mark_sent(self, app, delivery: Claimed, now: datetime) -> None:
        if not self.marker.mark(db.engine, app.config["REDIS_URL"], delivery.id, now):
            _finish(delivery.id, {"status": DeliveryStatus.SENT, "sent_at": now, "attempts": delivery.attempts + 1})

    def rendered_digest(self, app, digest: Digest, now: datetime):
        """Rendered once per digest and process, then personalised per recipient."""
        from ..mail.digest import render_digest

        key = (app.config["SQLALCHEMY_DATABASE_URI"], digest.id)
        if key not in self.rendered:
            if len(self.rendered) > 4:
                self.rendered.clear()
            self.rendered[key] = render_digest(digest, now)
        return self.rendered[key]

    def _close_smtp(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None

    def close(self) -> None:
        self._close_smtp()
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
        _mailer = (os.getpid(), Mailer())
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
        try:
            _send_claimed(app, mailer, digest, claimed, clock, limiter, sender, done)
        finally:
            mailer.marker.flush(db.engine)  # the claim's journaled marks, written together
    finish_if_complete(digest_id, clock())
    return done


def _send_claimed(app, mailer: Mailer, digest: Digest, claimed: list[Claimed], clock, limiter, sender: str,
                  done: dict) -> None:
    rendered = mailer.rendered_digest(app, digest, clock())
    people = _recipients([c.subscriber_id for c in claimed])
    sendable = []
    for delivery in claimed:
        person = people.get(delivery.subscriber_id)
        if person is None or person.status is not SubscriberStatus.CONFIRMED or person.suppressed:
            _finish(delivery.id, {"status": DeliveryStatus.SKIPPED})
            done["skipped"] += 1
        else:
            sendable.append((delivery, person))

    def build(index: int, now: datetime) -> bytes:
        delivery, person = sendable[index]
        return rendered.message_bytes(delivery.subscriber_id, person.email, person.name, now, for_data=True)

    ahead = None  # the next message, built while the relay was reading this one
    for index, (delivery, person) in enumerate(sendable):
        # Who comes next is known, and is sent to next whatever happens to this one: the
        # connection sends their envelope along with this message (one round trip per email).
        following = sendable[index + 1][1].email if index + 1 < len(sendable) else None
        if mailer.throttle.pause or app.config["SEND_RATE"] > 0:
            following = None  # waits to come: no reader's envelope is left open at the relay meanwhile
        mailer.throttle.wait()
        limiter.acquire()
        now = clock()
        try:
            message, ahead = ahead or build(index, now), None
            connection = mailer.connection_for(app)
            connection.begin(message, sender, person.email, then=following)
            if following is not None:
                try:
                    ahead = build(index + 1, now)
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


@dataclass
class _Person:
    email: str
    name: str | None
    status: SubscriberStatus
    suppressed: bool


def _recipients(subscriber_ids: list[int]) -> dict[int, _Person]:
    """Who the claimed rows are for, re-checked now: an unsubscribe mid-send is honoured."""
    rows = db.session.execute(
        select(Subscriber.id, Subscriber.email, Subscriber.name, Subscriber.status)
        .where(among(Subscriber.id, subscriber_ids))
    ).all()
    hmacs = {row.id: suppression.address_hmac(row.email) for row in rows}
    blocked = suppression.suppressed_hmacs(list(hmacs.values()))
    return {row.id: _Person(row.email, row.name, row.status, hmacs[row.id] in blocked) for row in rows}


def _defer(delivery: Claimed, person: _Person, now: datetime, error: str) -> str:
    attempts = delivery.attempts + 1
    first_try = db.session.scalar(select(Digest.sent_at).join(Delivery, Delivery.digest_id == Digest.id)
                                  .where(Delivery.id == delivery.id)) or now
    if now - first_try > timedelta(seconds=current_app.config["DELIVERY_EXPIRY_SECONDS"]):
        _finish(delivery.id, {"status": DeliveryStatus.FAILED, "attempts": attempts,
                              "last_error": f"expired after {attempts} attempts: {error}"[:500]})
        return "failed"
    _finish(delivery.id, {"status": DeliveryStatus.DEFERRED, "attempts": attempts, "last_error": error[:500],
                          "next_attempt_at": now + backoff(attempts, current_app.config["DELIVERY_RETRY_BASE_SECONDS"])})
    return "deferred"


def _fail(delivery: Claimed, person: _Person, now: datetime, error: PermanentMailError) -> None:
    if is_no_such_user(error):
        suppression.suppress(person.email, "hard-bounce", now)
        db.session.execute(update(Subscriber).where(Subscriber.id == delivery.subscriber_id)
                           .values(status=SubscriberStatus.BOUNCED))
    _finish(delivery.id, {"status": DeliveryStatus.FAILED, "attempts": delivery.attempts + 1,
                          "last_error": str(error)[:500]})


# --- progress, control, sweeping ------------------------------------------------------------


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
    _transition(digest_id, [DigestStatus.SENDING, DigestStatus.PAUSED, DigestStatus.DRAFT,
                            DigestStatus.SCHEDULED], DigestStatus.CANCELLED)
    db.session.execute(
        update(Delivery).where(Delivery.digest_id == digest_id, Delivery.status.in_(OPEN), Delivery.lease_owner.is_(None))
        .values(status=DeliveryStatus.SKIPPED, last_error="digest cancelled"),
        execution_options={"synchronize_session": False},
    )
    db.session.commit()


def sweep(now: datetime) -> int:
    """Hand out again what a lost task, a flushed queue or a dead worker left: for each digest
    being sent, the ranges holding due rows when no worker holds a live lease on any of its rows,
    and always the ranges of deferred rows whose retry time has come."""
    handed = 0
    for digest_id in db.session.scalars(select(Digest.id).where(Digest.status == DigestStatus.SENDING)):
        if finish_if_complete(digest_id, now):
            continue
        busy = db.session.scalar(select(func.count()).select_from(Delivery).where(
            Delivery.digest_id == digest_id, Delivery.lease_expires_at > now))
        started = db.session.scalar(select(Digest.sent_at).where(Digest.id == digest_id)) or now
        retry_due = db.session.scalar(select(func.count()).select_from(Delivery).where(
            Delivery.digest_id == digest_id, Delivery.status == DeliveryStatus.DEFERRED,
            Delivery.next_attempt_at <= now))
        stalled = now - started > timedelta(seconds=current_app.config["DELIVERY_STALL_SECONDS"])
        if retry_due or (not busy and stalled):
            handed += enqueue_ranges(digest_id, only_open=True)
    return handed


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


def progress(digest_id: int, now: datetime) -> dict:
    """What people watching a send see (console and `digest send --wait`): services/progress."""
    from .progress import progress as figures  # that module reads status() from here

    return figures(digest_id, now)
