"""Faults with real worker processes on PostgreSQL + Redis, judged by what the SMTP server received
(tests/e2e/sends.py): every expected recipient exactly once, no one else, the same Message-ID on any
duplicate that SMTP's own window allows, and status counts that match. Lease, sweep and stall keep
their defaults throughout."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import pytest
import redis
from sqlalchemy import func, select

from config import PROJECT_DIR
from newsletter.clock import utcnow
from newsletter.extensions import db
from newsletter.models import Delivery, DeliveryStatus, Subscriber
from newsletter.services import delivery

from .harness import wait_until
from .sends import N, SMALL, Send

pytestmark = [pytest.mark.worker, pytest.mark.postgres, pytest.mark.redis]

def test_worker_killed_mid_send_and_another_started_delivers_each_once(harness, smtp):
    run = Send(harness, 5)
    caught = "r0105@example.com"  # the sixth of its claim: five sent before it, their marks in the journal
    gate = threading.Event()
    smtp.plan.hold[caught] = gate  # the worker will be in the middle of sending this one
    harness.cleanup(gate.set)
    first = run.worker()
    run.beat()
    assert run.start() == N
    wait_until(lambda: caught in smtp.handler.holding, 60, "the worker to be mid-send")
    first.kill9()
    gate.set()
    with run.app.app_context():  # what the dead worker held: claimed, never marked
        held = set(db.session.scalars(
            select(Subscriber.email).join(Delivery, Delivery.subscriber_id == Subscriber.id)
            .where(Delivery.lease_owner.like(f"%:{first.pid}:%"), Delivery.status == DeliveryStatus.PENDING)))
    assert caught in held
    journal = redis.Redis.from_url(run.broker)
    [key] = [k for k in journal.keys("newsletter:sent:*") if f":{first.pid}:".encode() in k]
    sent_before = {int(entry.split()[0]) for entry in journal.lrange(key, 0, -1)}
    assert len(sent_before) == 5  # received by the relay, not yet written to the database
    run.worker()
    run.wait_done()
    run.assert_each_exactly_once()


def test_redis_flushed_mid_send_loses_nothing(harness, smtp):
    run = Send(harness, 6)
    smtp.plan.data_delay = 0.005
    run.worker()
    run.beat()
    run.start()
    wait_until(lambda: len(smtp.received) >= N // 5, 60, "a fifth of the digest to be received")
    redis.Redis.from_url(run.broker).flushdb()  # every queued batch task is gone
    run.wait_done()
    run.assert_each_exactly_once()


def test_two_workers_share_one_digest_without_overlap(harness, smtp):
    run = Send(harness, 7)
    smtp.plan.data_delay = 0.002
    one, two = run.worker(), run.worker()
    run.start()
    run.wait_done()
    run.assert_each_exactly_once()
    assert one.count(r"send_delivery_batch.*succeeded") and two.count(r"send_delivery_batch.*succeeded")


def test_temporary_then_permanent_refusals_and_421_disconnects(harness, smtp):
    run = Send(harness, 8, n=60)
    smtp.plan.rcpt.update({"r0001@example.com": ["451 4.7.1 Try later"] * 2,
                           "r0002@example.com": ["550 5.1.1 No such user here"],
                           "r0003@example.com": ["421 4.7.0 Too many messages, closing"]})
    smtp.plan.drop_after_data["r0004@example.com"] = 1
    run.worker(DELIVERY_RETRY_BASE_SECONDS=1)
    run.beat()
    run.start()
    # Final rows and then the digest's own status: the worker marks it done right after its last row.
    final = wait_until(lambda: (s := run.status())["pending"] == 0 and s["deferred"] == 0
                       and s["status"] != "sending" and s, 90, "every delivery to be final")
    got = run.received()
    assert "r0002@example.com" not in got
    assert got["r0001@example.com"] == 1 and got["r0003@example.com"] == 1
    assert got["r0004@example.com"] == 2  # dropped after DATA: the SMTP window
    ids = {m.message["Message-ID"] for m in smtp.to("r0004@example.com")}
    assert len(ids) == 1
    assert (final["status"], final["sent"], final["failed"]) == ("done", 59, 1)
    assert sum(got.values()) == 59 + 1


def test_digest_send_wait_shows_progress_until_done(harness, smtp):
    run = Send(harness, 9, n=40)
    run.worker()
    env = harness.env(run.database, run.broker, **SMALL)
    result = subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "digest", "send",
                             str(run.digest_id), "--wait"], cwd=PROJECT_DIR, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "sent 40 / deferred 0 / failed 0 of 40" in result.stdout
    assert "ETA 0 s  (done)" in result.stdout  # the console's figures: one rate and ETA for both
    assert json.loads(result.stdout.strip().splitlines()[-1])["status"] == "done"
    run.assert_each_exactly_once()
    with run.app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Delivery)
                                 .where(Delivery.status == DeliveryStatus.SENT)) == 40


def test_pause_stops_within_seconds_and_resume_continues_where_it_stopped(harness, smtp):
    run = Send(harness, 10)
    smtp.plan.data_delay = 0.01
    run.worker()
    run.start()
    wait_until(lambda: len(smtp.received) >= 30, 60, "the send to be under way")
    with run.app.app_context():
        delivery.pause(run.digest_id, utcnow())
    # Claims stop: the claim in hand is finished and released within a second or two.
    wait_until(lambda: run.leases() == 0, 5, "the claim in hand to finish")
    stopped_at = len(smtp.received)
    with run.app.app_context():
        assert delivery.sweep(utcnow()) == 0  # a paused digest is not handed out
    assert run.status() | {"pending": 0} == {"status": "paused", "total": N, "pending": 0, "sent": stopped_at,
                                             "deferred": 0, "failed": 0, "skipped": 0}
    assert stopped_at < N
    with run.app.app_context():
        delivery.resume(run.digest_id, utcnow())
    run.wait_done()
    run.assert_each_exactly_once()


def test_unsubscribe_during_the_send_is_honoured(harness, smtp):
    run = Send(harness, 4)
    smtp.plan.data_delay = 0.01
    run.worker()
    run.start()
    wait_until(lambda: len(smtp.received) >= 10, 60, "the send to be under way")
    leaving = run.emails[-5:]  # the end of the list: not yet claimed
    with run.app.app_context():
        from newsletter.services import subscriptions

        for email in leaving:
            subscriber = db.session.scalar(select(Subscriber).where(Subscriber.email == email))
            token = subscriptions.unsubscribe_token_for(subscriber, utcnow())
            subscriptions.unsubscribe(token, subscriptions.Context(None, None, "test"), utcnow())
    final = run.wait_done()
    got = run.received()
    assert not set(leaving) & set(got)
    assert set(got) == set(run.emails) - set(leaving) and max(got.values()) == 1
    assert (final["sent"], final["skipped"]) == (N - 5, 5)


def test_cancel_stops_the_send_for_good(harness, smtp):
    run = Send(harness, 3)
    smtp.plan.data_delay = 0.01
    run.worker()
    run.beat()
    run.start()
    wait_until(lambda: len(smtp.received) >= 20, 60, "the send to be under way")
    with run.app.app_context():
        delivery.cancel(run.digest_id, utcnow())
    final = wait_until(lambda: (s := run.status())["pending"] == 0 and run.leases() == 0 and s, 20,
                       "in-flight claims to settle")
    count = len(smtp.received)
    assert final["status"] == "cancelled" and final["sent"] == count < N
    assert final["sent"] + final["skipped"] == N
    assert max(run.received().values()) == 1
