"""Public signups answer at once and are decided after the answer: the request does the same work for
every address (so its time tells nothing), a worker decides with the request's own evidence."""

from __future__ import annotations

import json
from contextlib import contextmanager
from datetime import timedelta

import pytest
from flask import template_rendered
from sqlalchemy import event, func, select

from newsletter.extensions import db
from newsletter.models import ConsentEvent, OutboundEmail, SignupRequest, Subscriber, SubscriberStatus
from newsletter.queue import PROCESS_SIGNUP, TRANSACTIONAL_QUEUE, celery_init_app
from newsletter.services import gdpr, signup_requests
from newsletter.services.suppression import suppress
from newsletter.services.terms import text_sha256

from tests.support.concurrency import run_at_once
from tests.support.database import postgres_only
from tests.support.forms import Visitor
from tests.support.signups import plain_client, process_signups, waiting_signups

SITUATIONS = ("new", "pending", "confirmed", "unsubscribed", "suppressed")


@pytest.fixture
def broker(app, redis_server):
    """A real Redis broker for the app, to read what a request published."""
    number = 6
    client = redis_server.client(number)
    client.flushdb()
    app.config["CELERY_BROKER_URL"] = redis_server.url(number)
    celery_init_app(app)
    yield client
    app.extensions["celery"].close()
    client.flushdb()
    client.close()


def count(app, model) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(model))


def set_status(app, email, status):
    with app.app_context():
        db.session.scalar(select(Subscriber).where(Subscriber.email == email)).status = status
        db.session.commit()


def addresses_in_every_situation(app, clock) -> dict:
    """One address per situation a signup can meet, each signed up (and decided) beforehand."""
    emails = {situation: f"{situation}@example.com" for situation in SITUATIONS}
    client = plain_client(app)
    for situation in ("pending", "confirmed", "unsubscribed"):
        assert client.post("/api/v1/subscribe", json={"email": emails[situation], "consent": True}).status_code == 202
    process_signups(app)
    set_status(app, emails["confirmed"], SubscriberStatus.CONFIRMED)
    set_status(app, emails["unsubscribed"], SubscriberStatus.UNSUBSCRIBED)
    with app.app_context():
        suppress(emails["suppressed"], "hard-bounce", clock())
        db.session.commit()
    return emails


def empty(broker) -> None:
    broker.delete(TRANSACTIONAL_QUEUE)


@contextmanager
def work_done(app, broker):
    """What a request did: its SQL statements, the templates it rendered, the tasks it published."""
    work = {"sql": [], "templates": [], "tasks": []}

    def statement(conn, cursor, sql, parameters, context, executemany):
        work["sql"].append(sql)

    def rendered(sender, template, context, **extra):
        work["templates"].append(template.name)

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", statement)
    template_rendered.connect(rendered, app)
    try:
        yield work
    finally:
        event.remove(engine, "before_cursor_execute", statement)
        template_rendered.disconnect(rendered, app)
    messages = broker.lrange(TRANSACTIONAL_QUEUE, 0, -1)
    empty(broker)
    work["tasks"] = [json.loads(message)["headers"]["task"] for message in messages]


def test_a_public_signup_does_the_same_work_whoever_the_address_is(app, broker, clock):
    emails = addresses_in_every_situation(app, clock)
    empty(broker)  # the confirmations of those signups
    visitor = Visitor(plain_client(app), clock)
    api = plain_client(app)
    form_work, api_work = {}, {}
    for situation, email in emails.items():
        fields = visitor.load()
        clock.advance(seconds=5)
        with work_done(app, broker) as form_work[situation]:
            answer = visitor.client.post("/subscribe", data={**fields, "email": email, "consent": "yes"})
        assert answer.status_code == 303
        with work_done(app, broker) as api_work[situation]:
            # Nothing was decided since the form's request: the situations stand (and "new" needs a new one).
            api_email = "new-api@example.com" if situation == "new" else email
            answer = api.post("/api/v1/subscribe", json={"email": api_email, "consent": True})
        assert answer.status_code == 202

    for work in (form_work, api_work):
        for situation in SITUATIONS:
            assert work[situation] == work["new"], situation
        assert work["new"]["sql"] and work["new"]["tasks"] == [PROCESS_SIGNUP]
        assert work["new"]["templates"] == []  # no mail is rendered while the visitor waits
    assert count(app, SignupRequest) == 2 * len(SITUATIONS)  # recorded, not yet decided


def test_the_worker_decides_with_the_request_s_own_time_place_and_consent(app, clock):
    client = plain_client(app)
    requested_at = clock()
    answer = client.post("/api/v1/subscribe", headers={"User-Agent": "NewsSite/1.0"},
                         environ_base={"REMOTE_ADDR": "203.0.113.9"},
                         json={"email": "Ada@Example.COM", "name": "Ada", "consent": True,
                               "source": "https://news.example.org/a/1"})
    assert answer.status_code == 202
    assert (count(app, Subscriber), count(app, ConsentEvent), count(app, OutboundEmail)) == (0, 0, 0)
    with app.app_context():
        request = db.session.scalar(select(SignupRequest))
        assert (request.email, request.name, request.checkbox_value) == ("ada@example.com", "Ada", "true")

    clock.advance(minutes=3)  # the worker gets to it later
    assert [outcome.value for outcome in process_signups(app)] == ["created"]
    with app.app_context():
        subscriber = db.session.scalar(select(Subscriber))
        assert (subscriber.email, subscriber.status, subscriber.created_at) == (
            "ada@example.com", SubscriberStatus.PENDING, requested_at)
        (requested,) = subscriber.events
        assert (requested.occurred_at, requested.ip, requested.user_agent, requested.source) == (
            requested_at, "203.0.113.9", "NewsSite/1.0", "api: https://news.example.org/a/1")
        assert requested.checkbox_value == "true" and requested.terms.version == 1
        assert requested.terms_sha256 == text_sha256(requested.terms.text)
        outbound = db.session.scalar(select(OutboundEmail))
        assert outbound.recipient == "ada@example.com" and "/confirm/" in outbound.message
    assert waiting_signups(app) == 0


def test_a_request_is_decided_once_however_often_a_worker_is_woken_for_it(app, clock):
    client = plain_client(app)
    client.post("/api/v1/subscribe", json={"email": "once@example.com", "consent": True})
    with app.app_context():
        request_id = db.session.scalar(select(SignupRequest.id))
        assert signup_requests.process(request_id).value == "created"
        assert signup_requests.process(request_id) is None  # the sweeper's second wake-up call
    assert (count(app, Subscriber), count(app, ConsentEvent), count(app, OutboundEmail)) == (1, 1, 1)


def test_the_sweeper_wakes_workers_for_requests_left_waiting_past_the_grace(app, broker, clock):
    client = plain_client(app)
    client.post("/api/v1/subscribe", json={"email": "lost@example.com", "consent": True})
    empty(broker)  # its message lost (Redis restarted, or the broker was down)
    with app.app_context():
        (request_id,) = db.session.scalars(select(SignupRequest.id)).all()
        assert signup_requests.sweep(clock() + timedelta(seconds=5)) == 0  # still in its grace
        assert broker.llen(TRANSACTIONAL_QUEUE) == 0
        assert signup_requests.sweep(clock() + signup_requests.SWEEP_GRACE + timedelta(seconds=1)) == 1
    (message,) = broker.lrange(TRANSACTIONAL_QUEUE, 0, -1)
    assert json.loads(message)["headers"]["task"] == PROCESS_SIGNUP
    assert json.loads(message)["headers"]["argsrepr"] == f"({request_id},)"


def test_erasure_takes_the_person_s_undecided_signups_too(app, clock):
    client = plain_client(app)
    client.post("/api/v1/subscribe", json={"email": "gone@example.com", "consent": True})
    process_signups(app)
    client.post("/api/v1/subscribe", json={"email": "Gone@example.com", "consent": True})
    client.post("/api/v1/subscribe", json={"email": "other@example.com", "consent": True})
    with app.app_context():
        subscriber_id = db.session.scalar(select(Subscriber.id))
        gdpr.erase_person(subscriber_id, clock(), None, None)
        assert list(db.session.scalars(select(SignupRequest.email))) == ["other@example.com"]


@postgres_only
def test_workers_deciding_the_same_new_address_at_once_create_it_once(app, clock):
    client = plain_client(app)
    for index in range(10):
        clock.advance(seconds=1)
        assert client.post("/api/v1/subscribe", json={"email": "race@example.com", "consent": True},
                           environ_base={"REMOTE_ADDR": f"198.51.100.{index}"}).status_code == 202
    with app.app_context():
        ids = list(db.session.scalars(select(SignupRequest.id)))

    def worker(index):  # each woken for every request, in its own order
        with app.app_context():
            return [signup_requests.process(request_id) for request_id in ids[index:] + ids[:index]]

    outcomes = [outcome for results in run_at_once(len(ids), worker) for outcome in results if outcome]
    assert sorted(outcome.value for outcome in outcomes) == ["created"] + ["restarted"] * 9  # each decided once
    assert (count(app, Subscriber), count(app, ConsentEvent), count(app, OutboundEmail)) == (1, 10, 1)
    assert count(app, SignupRequest) == 0


def test_signups_waiting_for_a_worker_show_in_the_metrics(app, clock):
    app.config["METRICS_ENABLED"] = True
    client = plain_client(app)
    for email in ("one@example.com", "two@example.com"):
        client.post("/api/v1/subscribe", json={"email": email, "consent": True})
    assert "\nnewsletter_signup_backlog 2.0\n" in client.get("/metrics").get_data(as_text=True)
    process_signups(app)
    assert "\nnewsletter_signup_backlog 0.0\n" in client.get("/metrics").get_data(as_text=True)
