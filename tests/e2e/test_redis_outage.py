"""Redis stopped under a running service (PostgreSQL, Redis as broker and rate-limit storage, a real
worker and beat): signups from the form, the embed and the API, and console logins, answer as they
do with Redis up and store what they must; once Redis is back (empty, as after a restart without
persistence) the outbox sweeper, at its default interval, gets every confirmation sent, once."""

from __future__ import annotations

import logging
import uuid
from functools import partial
from urllib.parse import urlsplit

import pytest
from sqlalchemy import select

from newsletter.clock import utcnow
from newsletter.extensions import db
from newsletter.models import OutboundEmail, OutboundStatus, SignupRequest
from newsletter.services import operators, outbox, signup_requests, subscriptions
from tests.support.forms import OPERATOR_PASSWORD, form_fields, log_in
from tests.support.rate_limits import limit_counters, wait_until_counted_in_redis
from tests.support.redis_server import RedisServer

from .harness import MAIL_TIMEOUT, wait_until

pytestmark = [pytest.mark.worker, pytest.mark.postgres, pytest.mark.redis]

EDITOR = "editor@news.example.org"
FALLBACK = "Rate limit storage unreachable - falling back to in-memory storage"


def sign_up_everywhere(client, tag: str) -> tuple[list[str], list[tuple]]:
    """One signup from each door; returns the addresses and what each answer was."""
    emails = [f"{tag}-{door}-{uuid.uuid4().hex[:6]}@example.com" for door in ("form", "embed", "api")]
    answers = []
    for path, email in (("/subscribe", emails[0]), ("/embed", emails[1])):
        fields = form_fields(client.get(path).get_data(as_text=True))
        response = client.post(path, data={**fields, "email": email, "consent": "yes"})
        answers.append((path, response.status_code, urlsplit(response.headers.get("Location", "")).path))
    response = client.post("/api/v1/subscribe", json={"email": emails[2], "consent": True})
    answers.append(("/api/v1/subscribe", response.status_code, response.get_json()))
    return emails, answers


def outbound(app, email: str) -> list[tuple[OutboundStatus, int, str]]:
    with app.app_context():  # a new session each time: what the database says now
        rows = db.session.scalars(select(OutboundEmail).where(OutboundEmail.recipient == email)).all()
        found = [(row.status, row.attempts, row.message) for row in rows]
        db.session.remove()
        return found


def sent_rows(app, email: str) -> list[tuple[OutboundStatus, int, str]]:
    return [row for row in outbound(app, email) if row[0] is OutboundStatus.SENT]


def test_signups_and_logins_work_while_redis_is_down_and_confirmations_go_out_when_it_is_back(
        harness, smtp, tmp_path, caplog):
    redis = RedisServer(tmp_path / "redis").start()  # this test's own: it stops it
    harness.cleanup(redis.stop)
    url = redis.url()
    database = harness.postgres()
    web = harness.app(database, url, REDIS_URL=url, RATELIMIT_STORAGE_URI=url)
    with web.app_context():
        operators.create_operator(EDITOR, "editor", OPERATOR_PASSWORD, utcnow())
    worker = harness.worker(database, url)
    harness.beat(database, url)  # OUTBOX_SWEEP_SECONDS at its default, 30 s
    client = web.test_client()
    wait_until_counted_in_redis(client, redis)

    # Redis up: what every door answers, and the confirmations going out at once.
    up_emails, up_answers = sign_up_everywhere(client, "up")
    assert [answer[1] for answer in up_answers] == [303, 303, 202], up_answers
    for email in up_emails:
        smtp.wait_for(email, 1, timeout=MAIL_TIMEOUT)
    assert limit_counters(redis)

    redis.stop()
    caplog.set_level(logging.WARNING, logger="flask-limiter")
    down_emails, down_answers = sign_up_everywhere(client, "down")
    log_in(client, EDITOR)  # 302 to the dashboard
    dashboard = client.get("/console/")
    log_in(client.application.test_client(), EDITOR)  # another browser: a second limited request

    assert down_answers == up_answers
    assert dashboard.status_code == 200
    # Each signup is stored, as it was sent, for a worker to decide once the queue works again.
    with web.app_context():
        waiting = set(db.session.scalars(select(SignupRequest.email)))
    assert set(down_emails) <= waiting
    assert [r.getMessage() for r in caplog.records if r.name == "flask-limiter"] == [FALLBACK]  # once, not per request
    assert all(smtp.to(email) == [] for email in down_emails)

    # Back on the same port, empty: the queue lost nothing that mattered, the rows are the truth.
    redis.start_on(redis.port)
    # The signup sweeper finds the stored requests; the confirmations they make go out at once.
    sweep = (signup_requests.SWEEP_GRACE.total_seconds() + web.config["SIGNUP_SWEEP_SECONDS"]
             + outbox.SWEEP_GRACE.total_seconds())
    for email in down_emails:
        (received,) = smtp.wait_for(email, 1, timeout=sweep + MAIL_TIMEOUT)
        # The SMTP server has the message a moment before the worker commits "sent".
        (status, attempts, message) = wait_until(partial(sent_rows, web, email), 15, f"{email} marked sent")[0]
        assert attempts == 1 and received.message["Message-ID"] in message
    assert worker.count(r"sweep_signup_requests\[[^\]]+\] succeeded") >= 1
    with web.app_context():
        for email in down_emails:
            record = subscriptions.consent_record(email)
            assert record["status"] == "pending" and [e["kind"] for e in record["events"]] == ["requested"]
    assert [len(smtp.to(email)) for email in up_emails + down_emails] == [1] * 6
