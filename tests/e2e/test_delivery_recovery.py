"""Recovery on the shipped settings (lease, sweep, stall, claim and batch sizes all default), with
real worker processes on PostgreSQL + Redis: a worker killed with -9 is replaced within two
minutes while a live one keeps its claim through an exchange longer than a lease, pause and
unsubscribe reach the relay within two seconds, and a Redis crash with append-only on repeats
nothing (without it, the loss is reported)."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
import redis
from sqlalchemy import select

from newsletter.clock import utcnow
from newsletter.extensions import db
from newsletter.models import Delivery, DeliveryStatus, Subscriber
from newsletter.services import delivery, subscriptions
from tests.support.redis_server import RedisServer

from .harness import wait_until
from .sends import DEFAULTS, N, Send

pytestmark = [pytest.mark.worker, pytest.mark.postgres, pytest.mark.redis]

RELAY_SECONDS = 0.02  # per message: a relay slow enough for a claim of 250 to take five seconds
CAUGHT = "r0105@example.com"  # the 106th of the first claim: 105 sent (and journaled) before it


def catch_mid_send(harness, smtp) -> threading.Event:
    gate = threading.Event()
    smtp.plan.hold[CAUGHT] = gate  # the relay holds this one's DATA: the worker is mid-send
    harness.cleanup(gate.set)
    return gate


def rows(run) -> set[tuple]:
    with run.app.app_context():
        return set(db.session.execute(select(Delivery.status, Delivery.attempts, Delivery.lease_owner)).all())


def test_a_worker_killed_mid_send_is_replaced_and_the_digest_done_within_two_minutes(harness, smtp):
    run = Send(harness, 0, n=2 * N, settings=DEFAULTS)
    gate = catch_mid_send(harness, smtp)
    first = run.worker()
    run.beat()
    assert run.start() == 2 * N
    wait_until(lambda: CAUGHT in smtp.handler.holding, 60, "the worker to be mid-send")
    first.kill9()
    killed = time.monotonic()
    gate.set()
    run.worker()
    run.wait_done(timeout=120)
    assert time.monotonic() - killed < 120
    run.assert_each_exactly_once()
    assert rows(run) == {(DeliveryStatus.SENT, 1, None)}  # each sent once, in one attempt, no lease left


def test_a_live_worker_keeps_its_claim_through_an_smtp_exchange_longer_than_its_lease(harness, smtp):
    run = Send(harness, 1, settings=DEFAULTS)
    gate = catch_mid_send(harness, smtp)
    slow = {"SMTP_TIMEOUT": 60}  # the relay may take its time: longer than a lease
    run.worker(**slow)
    run.worker(**slow)  # free to take the claim, if it were ever given up
    run.beat()
    run.start()
    wait_until(lambda: CAUGHT in smtp.handler.holding, 60, "a worker to be mid-send")

    def held():
        with run.app.app_context():
            return db.session.execute(select(Delivery.lease_owner, Delivery.lease_expires_at)
                                      .join(Subscriber, Delivery.subscriber_id == Subscriber.id)
                                      .where(Subscriber.email == CAUGHT)).one()

    owner, first_expiry = held()
    wait_until(lambda: utcnow() > first_expiry + timedelta(seconds=1), 60, "the claim's first lease to run out")
    assert held().lease_owner == owner and held().lease_expires_at > utcnow()  # renewed, still the sender's
    gate.set()
    run.wait_done()
    run.assert_each_exactly_once()


def test_pause_mid_claim_reaches_the_relay_within_two_seconds_and_resume_sends_the_rest_once(harness, smtp):
    run = Send(harness, 1, settings=DEFAULTS)
    smtp.plan.data_delay = RELAY_SECONDS
    worker = run.worker()
    run.start()
    wait_until(lambda: len(smtp.received) >= 30, 60, "the send to be under way")
    with run.app.app_context():
        delivery.pause(run.digest_id, utcnow())
    paused = time.monotonic()
    # The worker lets go of its claim, and both tasks (the range it was in, and the next) end.
    wait_until(lambda: run.leases() == 0 and worker.count(r"send_delivery_batch.*succeeded") == 2, 30,
               "the worker to stop")
    late = [m.at - paused for m in smtp.received if m.at > paused + 2]
    assert late == []
    stopped_at = len(smtp.received)
    assert stopped_at < 250  # within the first claim, not after it
    assert run.status() == {"status": "paused", "total": N, "pending": N - stopped_at, "sent": stopped_at,
                            "deferred": 0, "failed": 0, "skipped": 0}
    with run.app.app_context():
        delivery.resume(run.digest_id, utcnow())
    run.wait_done()
    run.assert_each_exactly_once()


def test_an_unsubscribe_of_a_claimed_reader_stops_their_mail_within_two_seconds(harness, smtp):
    run = Send(harness, 2, settings=DEFAULTS)
    smtp.plan.data_delay = RELAY_SECONDS
    run.worker()
    run.start()
    wait_until(lambda: len(smtp.received) >= 30, 60, "the send to be under way")
    with run.app.app_context():
        # The last reader of the claim in hand: leased to the worker, about four seconds away.
        subscriber = db.session.scalar(
            select(Subscriber).join(Delivery, Delivery.subscriber_id == Subscriber.id)
            .where(Delivery.lease_owner.is_not(None), Delivery.status == DeliveryStatus.PENDING)
            .order_by(Delivery.id.desc()).limit(1))
        leaving = subscriber.email
        token = subscriptions.unsubscribe_token_for(subscriber, utcnow())
        subscriptions.unsubscribe(token, subscriptions.Context(None, None, "test"), utcnow())
    unsubscribed = time.monotonic()
    final = run.wait_done()
    assert [m.at - unsubscribed for m in smtp.to(leaving) if m.at > unsubscribed + 2] == []
    assert smtp.to(leaving) == []  # (nothing at all: they were seconds down the claim)
    assert (final["sent"], final["skipped"]) == (N - 1, 1)
    got = run.received()
    assert set(got) == set(run.emails) - {leaving} and max(got.values()) == 1
    with run.app.app_context():
        assert db.session.scalar(select(Delivery.status).join(Subscriber, Delivery.subscriber_id == Subscriber.id)
                                 .where(Subscriber.email == leaving)) is DeliveryStatus.SKIPPED


@pytest.mark.parametrize("appendonly", [True, False], ids=["append-only", "no-persistence"])
def test_a_worker_and_its_redis_killed_together_repeat_nothing_with_append_only(harness, smtp, tmp_path, appendonly):
    own = RedisServer(tmp_path / "redis", appendonly=appendonly).start()  # broker and journal, as in production
    harness.cleanup(own.stop)
    run = Send(harness, 0, settings=DEFAULTS, broker=own.url(0))
    gate = catch_mid_send(harness, smtp)
    first = run.worker()
    assert run.start() == N
    wait_until(lambda: CAUGHT in smtp.handler.holding, 60, "the worker to be mid-send")
    first.kill9()  # a host crash: the worker and Redis at once
    own.kill9()
    gate.set()
    sent_before = {m.recipients[0] for m in smtp.received}
    assert len(sent_before) == 105
    own.start_on(own.port)
    journal = redis.Redis.from_url(own.url(0))
    harness.cleanup(journal.close)
    kept = [k for k in journal.keys("newsletter:sent:*") if f":{first.pid}:".encode() in k]
    assert [journal.llen(k) for k in kept] == ([105] if appendonly else [])
    run.beat()
    second = run.worker()
    run.wait_done(timeout=120)
    if appendonly:
        run.assert_each_exactly_once(allowed_duplicates={CAUGHT})  # at most the message in flight
        assert second.count("was lost") == 0
    else:
        run.assert_each_exactly_once(allowed_duplicates=sent_before | {CAUGHT})
        wait_until(lambda: second.count(rf"WARNING.*sent journal of \S+:{first.pid}:\S+ was lost.*up to 250 "
                                        r"messages"), 10, "the loss to be reported")
