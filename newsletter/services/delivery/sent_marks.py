"""Sent marks: each row marked sent right after its 250, durable against a worker crash from then on.

With a redis:// REDIS_URL the mark goes to this worker's journal in Redis and each claim's rows are
written together; without Redis, or while it fails, each row is written on its own through libpq;
on SQLite the ORM marks it (the caller). Why and how it holds: docs/ARCHITECTURE.md, "Delivery".
"""

from __future__ import annotations

import logging
import os
import time
from datetime import datetime, timezone

from ... import queue
from ...infra import redis_wire
from ...infra.postgres_fastpath import PreparedStatements
from ...infra.redis_wire import RespClient, RespError

log = logging.getLogger(__name__)

JOURNAL_KEY = "newsletter:sent:"  # + the lease owner: the rows it has sent and not yet written
# + the lease owner: set when each of its claims begins, so that a journal found without it was lost
# (Redis restarted empty, or flushed) rather than empty.
CLAIM_KEY = "newsletter:claim:"
CLAIM_KEY_SECONDS = 86400  # (a claim's leases run out in seconds; this only tidies up after the dead)

# The lease owner is queue.worker_id(), looked up per call (not imported by name) here and in claims,
# so that one process can stand in for another worker, as the journal tests do.


class SentMarker:
    """The sent-mark store of one worker process: mark, flush at the end of a claim, replay the dead's.

    Losing the journal and the worker at once could repeat up to one claim's messages, as a database
    crash can with asynchronous commit (docs/ARCHITECTURE.md, "Delivery").
    """

    JOURNAL_PAUSE = 30  # seconds without the journal after Redis failed: one connection attempt, not one per email

    STATEMENTS = {
        b"mark_sent_row": b"UPDATE delivery SET status = 'sent', sent_at = $1, attempts = attempts + 1, "
                          b"lease_owner = NULL, lease_expires_at = NULL WHERE id = $2 AND lease_owner = $3",
        # Only rows leased by the worker that sent them: writing twice changes nothing. Skipped: the
        # digest was cancelled while the message was on its way; it went all the same.
        b"mark_sent_rows": b"UPDATE delivery AS d SET status = 'sent', sent_at = v.sent_at, "
                           b"attempts = d.attempts + 1, lease_owner = NULL, lease_expires_at = NULL "
                           b"FROM unnest($1::bigint[], $2::timestamptz[]) AS v(id, sent_at) "
                           b"WHERE d.id = v.id AND d.lease_owner = $3 "
                           b"AND d.status IN ('pending', 'deferred', 'skipped')",
    }

    def __init__(self):
        self.database = PreparedStatements(self.STATEMENTS)
        self.journal: RespClient | None = None
        self.journal_url: str | None = None
        self.push = b""  # RPUSH and this worker's key, encoded once
        self.push_owner: str | None = None
        self.pending: list[tuple[int, datetime]] = []  # journaled, not yet written
        self.journal_paused_until = 0.0

    @property
    def pgconn(self):
        """The libpq connection the marks are written on (None until the first)."""
        return self.database.pgconn

    def mark(self, engine, redis_url: str | None, delivery_id: int, sent_at: datetime) -> bool:
        """False: not PostgreSQL, the caller marks the row itself."""
        if engine.dialect.name != "postgresql":
            return False
        if redis_url and (redis_url != self.journal_url or self.push_owner != queue.worker_id()):
            self._use_journal(redis_url)
        if (self.journal is not None and time.monotonic() >= self.journal_paused_until
                and self._journal(engine, delivery_id, sent_at)):
            return True
        self.database.execute(engine, b"mark_sent_row",
                              [_text(sent_at), b"%d" % delivery_id, queue.worker_id().encode()])
        return True

    def begin_claim(self, engine, redis_url: str | None, now: datetime) -> None:
        """Note in Redis that a claim begins (before its rows are leased): see CLAIM_KEY."""
        if engine.dialect.name != "postgresql" or not redis_url:
            return
        if redis_url != self.journal_url or self.push_owner != queue.worker_id():
            self._use_journal(redis_url)
        if self.journal is None or time.monotonic() < self.journal_paused_until:
            return
        try:
            self.journal.command("SET", CLAIM_KEY + self.push_owner, _micros(now), "EX", CLAIM_KEY_SECONDS)
        except RespError as error:
            log.warning("sent journal unavailable (%s): marking rows one by one for %d s", error, self.JOURNAL_PAUSE)
            self.journal_paused_until = time.monotonic() + self.JOURNAL_PAUSE

    def _use_journal(self, redis_url: str) -> None:
        if self.journal is not None:
            self.journal.close()
        self.journal_url = redis_url
        self.journal = RespClient(redis_url) if redis_wire.supported(redis_url) else None
        self.journal_paused_until = 0.0
        self.push_owner = queue.worker_id()
        self.push = redis_wire.encode(("RPUSH", JOURNAL_KEY + self.push_owner))[4:]  # the command, less its count

    def _journal(self, engine, delivery_id: int, sent_at: datetime) -> bool:
        """The mark goes to Redis without waiting for its answer (the answer to the mark before is
        read first), and is durable all the same (docs/ARCHITECTURE.md, "Delivery")."""
        value = b"%d %d" % (delivery_id, _micros(sent_at))
        try:
            self.journal.post(b"*3\r\n" + self.push + b"$%d\r\n%s\r\n" % (len(value), value))
        except RespError as error:
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
        self.database.execute(engine, b"mark_sent_rows", [*_arrays(self.pending), queue.worker_id().encode()])
        self.pending.clear()
        if time.monotonic() < self.journal_paused_until:
            return  # Redis just failed: what it may still hold names rows no longer open
        try:
            self.journal.command("DEL", JOURNAL_KEY + queue.worker_id())
        except RespError:
            pass  # what is left names rows no longer open: replaying it changes nothing

    def replay_owners(self, engine, redis_url: str, owners: dict[str, int]) -> bool:
        """Write what these workers, whose leases ran out on so many open rows, had journaled. False
        when the journal cannot be read (or Redis failed less than JOURNAL_PAUSE seconds ago): their rows wait."""
        if redis_url != self.journal_url:
            self._use_journal(redis_url)  # (the pause below is that of one Redis)
        if time.monotonic() < self.journal_paused_until:
            return False
        try:
            for owner, leased in owners.items():
                if owner == queue.worker_id():
                    self.flush(engine)  # our own, from a claim that stopped half-way
                replayed = self.replay(engine, redis_url, owner, leased)
                if replayed:
                    log.info("wrote %d sent marks journaled by %s, whose lease ran out", replayed, owner)
        except RespError as error:
            log.warning("cannot read the sent journal (%s): rows of expired leases wait", error)
            self.journal_paused_until = time.monotonic() + self.JOURNAL_PAUSE
            return False
        return True

    def replay(self, engine, redis_url: str, owner: str, leased: int = 0) -> int:
        """Write what a worker whose lease ran out (on `leased` open rows) had journaled. Raises RespError."""
        client = self._client(redis_url)
        entries = client.command("LRANGE", JOURNAL_KEY + owner, 0, -1) or []
        if leased and not client.command("EXISTS", CLAIM_KEY + owner):
            # Redis lost the journal (restarted without persistence, or flushed): what the worker
            # sent of this claim and had not written is unknown, and goes out again.
            log.warning("the sent journal of %s was lost (Redis restarted empty? production needs appendonly yes): "
                        "up to %d messages of its claim may be sent a second time", owner, leased)
        if entries:
            marks = [(int(i), _from_micros(int(m))) for i, m in (entry.split() for entry in entries)]
            self.database.execute(engine, b"mark_sent_rows", [*_arrays(marks), owner.encode()])
        client.command("DEL", JOURNAL_KEY + owner, CLAIM_KEY + owner)
        return len(entries)

    def _client(self, redis_url: str) -> RespClient:
        if redis_url != self.journal_url:
            self._use_journal(redis_url)
        return self.journal

    def close(self) -> None:
        self.database.close()
        if self.journal is not None:
            self.journal.close()


_marker: tuple[int, SentMarker] | None = None


def process_marker() -> SentMarker:
    """This process's SentMarker (its Mailer's). A forked child gets its own: its sockets and its
    journal key (which names the worker process) are never the parent's."""
    global _marker
    if _marker is None or _marker[0] != os.getpid():
        _marker = (os.getpid(), SentMarker())
    return _marker[1]


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
