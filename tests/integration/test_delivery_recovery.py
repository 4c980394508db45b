"""Recovery in one process against a real SMTP server: a dead worker's rows freed by the sweeper at
once, lost tasks handed out only when the bulk queue is empty, leases renewed by the live worker's
thread, cancel ending leased rows too, and pause or unsubscribe taking effect between two messages."""

import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import select

from newsletter import create_app, queue
from newsletter.extensions import db
from newsletter.models import Delivery, Subscriber
from newsletter.services import delivery, subscriptions
from newsletter.services.delivery.leases import LeaseKeeper
from tests.support.database import base_config
from tests.support.waiting import wait_until

from .test_delivery import CONFIRMED, received_by, run_all, start, status
from .test_delivery import digest_id, mailer  # noqa: F401  (fixtures)



def leased(app) -> dict[int, str | None]:
    with app.app_context():
        return dict(db.session.execute(select(Delivery.id, Delivery.lease_owner)).all())


def test_cancel_ends_the_rows_a_dead_worker_held_too_so_nothing_stays_pending(app, mailer, smtp,  # noqa: F811
                                                                              digest_id, clock):  # noqa: F811
    start(app, digest_id, clock)
    with app.app_context():
        first, last = delivery.batch_ranges(digest_id)[0]
        assert len(delivery.claim(digest_id, first, last, clock(), 3)) == 3  # a worker that then died
        delivery.cancel(digest_id, clock())
    assert status(app, digest_id) == {"status": "cancelled", "total": 12, "pending": 0, "sent": 0, "deferred": 0,
                                      "failed": 0, "skipped": 12}
    run_all(app, digest_id, clock, mailer)
    assert smtp.received == []


def test_the_sweeper_frees_a_dead_workers_rows_at_once_while_a_live_worker_holds_others(app, mailer, smtp,  # noqa: F811
                                                                                       digest_id, clock):  # noqa: F811
    start(app, digest_id, clock)
    with app.app_context():
        (first, last), (second, second_last), _ = delivery.batch_ranges(digest_id)
        dead = [c.id for c in delivery.claim(digest_id, first, last, clock(), 3)]
        clock.advance(seconds=app.config["DELIVERY_LEASE_SECONDS"] + 1)
        alive = [c.id for c in delivery.claim(digest_id, second, second_last, clock(), 3)]
        # The broker is down here, so it cannot say whether tasks wait: only the dead worker's rows go.
        assert delivery.sweep(clock()) == 1
    owners = leased(app)
    assert [owners[i] for i in dead] == [None] * 3 and None not in [owners[i] for i in alive]


def test_a_live_workers_leases_are_renewed_by_its_own_thread_until_it_lets_go(app, mailer,  # noqa: F811
                                                                              digest_id, clock):  # noqa: F811
    start(app, digest_id, clock)
    keeper = LeaseKeeper()
    try:
        with app.app_context():
            first, last = delivery.batch_ranges(digest_id)[0]
            ids = [c.id for c in delivery.claim(digest_id, first, last, clock(), 3)]
            keeper.hold(app, digest_id, ids, queue.worker_id(), 0.6, clock)
            assert keeper.safe()
            clock.advance(minutes=10)  # the claim's own lease (DELIVERY_LEASE_SECONDS) ran out long ago

            def expiries():
                db.session.rollback()
                return set(db.session.scalars(select(Delivery.lease_expires_at).where(Delivery.id.in_(ids))))

            wait_until(lambda: expiries() == {clock() + timedelta(seconds=0.6)}, 10, "the leases to be renewed")
            assert keeper.safe()
            keeper.release()
            assert not keeper.safe()
    finally:
        keeper.close()


@pytest.fixture
def queued(app, redis_server, tmp_path, smtp, database_url, clock):
    """The same service with a real Redis broker and no worker: tasks wait in the bulk queue."""
    broker = redis_server.client(QUEUE_DB)
    broker.flushdb()
    config = base_config(tmp_path, smtp.url, database_url, clock)
    config.update(CELERY_BROKER_URL=redis_server.url(QUEUE_DB), DELIVERY_BATCH_SIZE=5, DELIVERY_CLAIM_SIZE=3)
    service = create_app(config)
    yield service, broker
    with service.app_context():
        db.session.remove()
        db.engine.dispose()
    service.extensions["celery"].close()
    broker.flushdb()
    broker.close()


QUEUE_DB = 2  # of the run's redis-server


@pytest.mark.redis
def test_lost_tasks_are_handed_out_when_the_bulk_queue_is_empty_and_never_while_it_holds_tasks(
        queued, digest_id, clock):  # noqa: F811
    service, broker = queued
    with service.app_context():
        delivery.start_sending(digest_id, clock())
        assert queue.waiting_tasks() == 3  # no worker takes them
        clock.advance(minutes=10)
        assert delivery.sweep(clock()) == 0  # however long a send takes, its waiting tasks get no duplicates
        broker.flushdb()  # the queue is lost (Redis flushed, or restarted without persistence)
        assert queue.waiting_tasks() == 0
        assert delivery.sweep(clock()) == 3
        assert queue.waiting_tasks() == 3


@pytest.mark.parametrize("change", ["pause", "unsubscribe"])
def test_a_pause_or_an_unsubscribe_takes_effect_between_two_messages_of_a_claim(
        app, mailer, smtp, digest_id, clock, change):  # noqa: F811
    app.config.update(DELIVERY_BATCH_SIZE=12, DELIVERY_CLAIM_SIZE=12)  # the whole digest in one claim
    smtp.plan.data_delay = 0.1  # a claim of 12 takes over a second
    last = CONFIRMED[-1]
    start(app, digest_id, clock)
    changed = []

    def change_mid_claim():
        wait_until(lambda: len(smtp.received) >= 2, 10, "the claim to be under way")
        with app.app_context():
            if change == "pause":
                delivery.pause(digest_id, clock())
            else:
                subscriber = db.session.scalar(select(Subscriber).where(Subscriber.email == last))
                subscriptions.unsubscribe(subscriptions.unsubscribe_token_for(subscriber, clock()),
                                          subscriptions.Context(None, None, "test"), clock())
        changed.append(time.monotonic())

    helper = threading.Thread(target=change_mid_claim)
    helper.start()
    try:
        run_all(app, digest_id, clock, mailer)
    finally:
        helper.join(15)
    [at] = changed
    if change == "pause":
        assert [m.at - at for m in smtp.received if m.at > at + 1] == [] and len(smtp.received) < len(CONFIRMED)
        current = status(app, digest_id)
        assert (current["status"], current["sent"], current["pending"]) == ("paused", len(smtp.received),
                                                                          len(CONFIRMED) - len(smtp.received))
        assert set(leased(app).values()) == {None}  # what it did not send is free for the resume
    else:
        assert smtp.to(last) == [] and received_by(smtp) == {email: 1 for email in CONFIRMED[:-1]}
        assert status(app, digest_id)["skipped"] == 1


def test_waiting_tasks_are_counted_on_the_embedded_broker_too(tmp_path, smtp, clock):
    config = base_config(tmp_path, smtp.url, f"sqlite:///{tmp_path / 'newsletter.sqlite'}", clock)
    config.update(CELERY_BROKER_URL=f"sqla+sqlite:///{tmp_path / 'broker.sqlite'}")
    service = create_app(config)
    try:
        with service.app_context():
            assert queue.waiting_tasks() == 0
            assert queue.enqueue(queue.SEND_BATCH, 1, 1, 250) and queue.enqueue(queue.SEND_BATCH, 1, 251, 500)
            assert (queue.waiting_tasks(), queue.waiting_tasks(queue.TRANSACTIONAL_QUEUE)) == (2, 0)
    finally:
        service.extensions["celery"].close()
