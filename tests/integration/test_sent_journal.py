"""The sent journal on PostgreSQL + Redis: each mark in Redis right after its 250, the claim's rows
written together, a dead worker's journal written before its rows are claimed again, and every way
Redis can fail leading to each reader getting the digest once."""

import logging
import subprocess
import sys

import pytest
from sqlalchemy import func, select

from config import PROJECT_DIR
from newsletter import queue
from newsletter.extensions import db
from newsletter.infra.redis_wire import RespClient, RespError
from newsletter.mail.compose import sender_address
from newsletter.models import Delivery, DeliveryStatus
from newsletter.services import delivery


from .test_delivery import CONFIRMED, received_by, run_all, start
from .test_delivery import digest_id, mailer  # noqa: F401  (fixtures)

JOURNAL_DB = 14
NOWHERE = "redis://127.0.0.1:1/0"  # nothing listens there
DEAD = "dead-host:4242:abcdef"

pytestmark = [pytest.mark.postgres, pytest.mark.redis]
ON_POSTGRES = pytest.mark.parametrize("database_url", ["postgres"], indirect=True)  # SQLite: the ORM marks


@pytest.fixture
def journal_url(redis_server):
    return redis_server.url(JOURNAL_DB)


@pytest.fixture
def journal(redis_server):
    client = redis_server.client(JOURNAL_DB)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture
def journaled(app, journal, journal_url):
    app.config.update(REDIS_URL=journal_url, DELIVERY_LEASE_SECONDS=60)
    return app


def rows(app) -> dict[str, int]:
    with app.app_context():
        return {status.value: n for status, n in db.session.execute(
            select(Delivery.status, func.count()).group_by(Delivery.status))}


def test_the_resp_client_speaks_to_its_own_database_and_reports_failures(journal, journal_url):
    client = RespClient(journal_url)
    assert client.command("RPUSH", "k", b"1 2") == 1
    assert client.command("RPUSH", "k", "3 4") == 2
    assert client.command("LRANGE", "k", 0, -1) == [b"1 2", b"3 4"]
    assert journal.lrange("k", 0, -1) == [b"1 2", b"3 4"]  # database 14, not 0
    with pytest.raises(RespError, match="WRONGTYPE|ERR"):
        client.command("INCR", "k")
    assert client.command("DEL", "k") == 1 and client.command("GET", "k") is None
    client.close()
    with pytest.raises(RespError):
        RespClient(NOWHERE, timeout=2).command("PING")


# A process that posts one journal entry, never reads Redis's answer, and is killed with -9 at once.
POST_AND_DIE = """
import os, signal, sys
from newsletter.infra.redis_wire import RespClient, encode
client = RespClient(sys.argv[1])
client.post(encode(("RPUSH", "killed", "before")))
client.post(encode(("RPUSH", "killed", sys.argv[2])))  # reads the answer to the first, not to this one
assert client.waiting
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_journal_entry_on_the_wire_is_kept_though_its_worker_is_killed_at_once(journal, journal_url):
    for round_ in range(20):
        died = subprocess.run([sys.executable, "-c", POST_AND_DIE, journal_url, str(round_)], cwd=str(PROJECT_DIR),
                              timeout=60)
        assert died.returncode == -9
    kept = [entry for entry in journal.lrange("killed", 0, -1) if entry != b"before"]
    assert kept == [str(i).encode() for i in range(20)]


@ON_POSTGRES
def test_a_journaled_digest_goes_to_each_reader_once_and_leaves_no_journal(journaled, mailer, smtp,  # noqa: F811
                                                                            digest_id, clock, journal):  # noqa: F811
    start(journaled, digest_id, clock)
    assert run_all(journaled, digest_id, clock, mailer)["sent"] == len(CONFIRMED)
    assert received_by(smtp) == {email: 1 for email in CONFIRMED}
    assert rows(journaled) == {"sent": len(CONFIRMED)}
    assert journal.keys("newsletter:sent:*") == []
    with journaled.app_context():
        times = set(db.session.scalars(select(Delivery.sent_at)))
        assert times == {clock()} and set(db.session.scalars(select(Delivery.attempts))) == {1}


def die_mid_claim(app, digest_id, clock, mailer, smtp, monkeypatch, sent: int) -> list[int]:  # noqa: F811
    """What a worker killed mid-claim leaves: a claim of 3 leased to it, `sent` of them received
    by the relay and journaled, none written."""
    with app.app_context(), monkeypatch.context() as patch:
        patch.setattr(queue, "worker_id", lambda: DEAD)  # the engine looks it up per call
        first, last = delivery.batch_ranges(digest_id)[0]
        claimed = delivery.claim(digest_id, first, last, clock(), 3)
        people = delivery._recipients([c.subscriber_id for c in claimed])
        for row in claimed[:sent]:
            mailer.connection_for(app).send(b"Subject: x\r\n\r\nx\r\n", sender_address(), people[row.subscriber_id].email)
            assert mailer.marker.mark(db.engine, app.config["REDIS_URL"], row.id, clock())
        mailer.marker.pending.clear()  # the process is gone: nothing it held in memory survives
        return [row.id for row in claimed]


@ON_POSTGRES
def test_a_dead_workers_journal_is_written_before_its_rows_are_claimed_again(journaled, mailer, smtp,  # noqa: F811
                                                                               digest_id, clock, journal,  # noqa: F811
                                                                               monkeypatch):
    start(journaled, digest_id, clock)
    leased = die_mid_claim(journaled, digest_id, clock, mailer, smtp, monkeypatch, sent=2)
    assert journal.llen(f"newsletter:sent:{DEAD}") == 2
    assert run_all(journaled, digest_id, clock, mailer)["sent"] == len(CONFIRMED) - 3  # the lease still holds
    clock.advance(seconds=61)
    assert run_all(journaled, digest_id, clock, mailer)["sent"] == 1  # the one it never sent
    assert received_by(smtp) == {email: 1 for email in CONFIRMED}
    assert rows(journaled) == {"sent": len(CONFIRMED)}
    assert journal.keys("newsletter:sent:*") == []
    with journaled.app_context():
        assert db.session.scalar(select(func.count()).where(Delivery.id.in_(leased),
                                                            Delivery.lease_owner.is_not(None))) == 0


@ON_POSTGRES
def test_while_the_journal_cannot_be_read_a_dead_workers_rows_wait(journaled, mailer, smtp, digest_id,  # noqa: F811
                                                                    clock, journal, monkeypatch, journal_url):
    start(journaled, digest_id, clock)
    die_mid_claim(journaled, digest_id, clock, mailer, smtp, monkeypatch, sent=3)
    clock.advance(seconds=61)
    journaled.config["REDIS_URL"] = NOWHERE  # Redis out of reach: marks go row by row, replays wait
    run_all(journaled, digest_id, clock, mailer)
    assert rows(journaled) == {"sent": len(CONFIRMED) - 3, "pending": 3}
    journaled.config["REDIS_URL"] = journal_url
    assert run_all(journaled, digest_id, clock, mailer)["sent"] == 0  # all three had been sent
    assert received_by(smtp) == {email: 1 for email in CONFIRMED}
    assert rows(journaled) == {"sent": len(CONFIRMED)}


@ON_POSTGRES
def test_a_living_worker_writes_its_claim_from_memory_when_redis_lost_the_journal(journaled, mailer, smtp,  # noqa: F811
                                                                                   digest_id, clock, journal, journal_url):  # noqa: F811
    start(journaled, digest_id, clock)
    with journaled.app_context():
        first, last = delivery.batch_ranges(digest_id)[0]
        claimed = delivery.claim(digest_id, first, last, clock(), 3)
        for row in claimed:
            assert mailer.marker.mark(db.engine, journal_url, row.id, clock())
        journal.flushdb()  # Redis restarted, or flushed by somebody
        mailer.marker.flush(db.engine)
        assert db.session.scalar(select(func.count()).where(Delivery.status == DeliveryStatus.SENT)) == 3


@ON_POSTGRES
def test_without_a_reachable_journal_each_row_is_marked_on_its_own(app, mailer, smtp, digest_id, clock,  # noqa: F811
                                                                      monkeypatch):
    attempts = []
    connect = RespClient._connect
    monkeypatch.setattr(RespClient, "_connect", lambda self: attempts.append(1) or connect(self))
    app.config.update(REDIS_URL=NOWHERE)
    start(app, digest_id, clock)
    assert run_all(app, digest_id, clock, mailer)["sent"] == len(CONFIRMED)
    assert len(attempts) == 1  # then row by row for a while: not a connection attempt per email
    assert received_by(smtp) == {email: 1 for email in CONFIRMED}
    assert rows(app) == {"sent": len(CONFIRMED)}
    assert mailer.marker.pending == []


@ON_POSTGRES
def test_the_lease_of_the_dead_still_counts_until_it_runs_out(journaled, mailer, smtp, digest_id, clock,  # noqa: F811
                                                              journal, monkeypatch):
    start(journaled, digest_id, clock)
    die_mid_claim(journaled, digest_id, clock, mailer, smtp, monkeypatch, sent=1)
    clock.advance(seconds=59)
    run_all(journaled, digest_id, clock, mailer)
    assert rows(journaled) == {"sent": len(CONFIRMED) - 3, "pending": 3}
    assert journal.llen(f"newsletter:sent:{DEAD}") == 1  # untouched while the lease holds
    clock.advance(seconds=2)
    run_all(journaled, digest_id, clock, mailer)
    assert received_by(smtp) == {email: 1 for email in CONFIRMED}


@ON_POSTGRES
@pytest.mark.parametrize("redis_restarted_empty", [False, True], ids=["journal-kept", "journal-lost"])
def test_a_lost_journal_is_reported_with_the_count_of_messages_that_may_go_twice(journaled, mailer, smtp,  # noqa: F811
                                                                                digest_id, clock, journal,  # noqa: F811
                                                                                monkeypatch, caplog,
                                                                                redis_restarted_empty):
    start(journaled, digest_id, clock)
    die_mid_claim(journaled, digest_id, clock, mailer, smtp, monkeypatch, sent=2)
    if redis_restarted_empty:
        journal.flushdb()  # what a Redis without persistence is after a restart
    clock.advance(seconds=61)
    with caplog.at_level(logging.WARNING, logger="newsletter.services.delivery.sent_marks"):
        run_all(journaled, digest_id, clock, mailer)
    alarms = [r for r in caplog.records if "was lost" in r.getMessage()]
    got = received_by(smtp)
    if not redis_restarted_empty:
        assert alarms == [] and got == {email: 1 for email in CONFIRMED}
        return
    [alarm] = alarms
    assert alarm.levelno == logging.WARNING
    assert DEAD in alarm.getMessage() and "up to 3 messages" in alarm.getMessage()  # the dead worker's claim of 3
    assert sorted(got.values()) == [1] * (len(CONFIRMED) - 2) + [2, 2]  # the two it had sent: again
    assert rows(journaled) == {"sent": len(CONFIRMED)}
