"""End to end with real Celery processes: web app -> database outbox -> broker -> worker -> SMTP.

No eager mode and no mocks: the worker (and beat) are `celery -A workers ...` subprocesses started
the way the Procfile starts them, configured only through the environment, and the mail goes over
a socket to the aiosmtpd server of tests/smtp_server.py. Every wait is a bounded poll, and every
process is stopped in teardown whatever happened; a failing test prints the processes' logs.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
import uuid
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from sqlalchemy import select

from newsletter.clock import utcnow
from newsletter.extensions import db
from newsletter.models import OutboundEmail, OutboundStatus
from newsletter.errors import InvalidInput
from newsletter.services import outbox, signup_requests, subscriptions
from newsletter.times import parse_iso
from tests.support.database import DOWN_BROKER
from tests.support.forms import form_fields
from tests.support.signups import process_signups, waiting_signups

from .harness import BASE_URL, MAIL_TIMEOUT, wait_until

pytestmark = pytest.mark.worker

# --- helpers -------------------------------------------------------------------------------------


def sign_up(client, email: str):
    """The signup form, as a browser sends it: GET the page, POST its hidden fields back."""
    page = client.get("/subscribe")
    assert page.status_code == 200
    fields = form_fields(page.get_data(as_text=True))
    assert {"csrf_token", "form_token", "terms_version"} <= fields.keys(), fields
    response = client.post("/subscribe", data={**fields, "email": email, "consent": "yes"})
    assert response.status_code == 303, response.get_data(as_text=True)
    assert urlsplit(response.headers["Location"]).path == "/subscribe/check-your-email"
    return response


def outbound_rows(app, email: str) -> list[OutboundEmail]:
    with app.app_context():  # a new session each time: what the database says now
        rows = db.session.scalars(
            select(OutboundEmail).where(OutboundEmail.recipient == email).order_by(OutboundEmail.id)
        ).all()
        db.session.expunge_all()
        return rows


def wait_sent(app, email: str, timeout: float = 15) -> OutboundEmail:
    # The SMTP server has the message a moment before the worker commits "sent".
    rows = wait_until(lambda: [r for r in outbound_rows(app, email) if r.status is OutboundStatus.SENT],
                      timeout, f"the outbox row for {email} to be sent")
    assert len(rows) == 1
    return rows[0]


def text_part(received) -> str:
    return received.message.get_body(preferencelist=("plain",)).get_content()


def confirm_url(received) -> str:
    match = re.search(re.escape(BASE_URL) + r"/confirm/[^\s<>\"]+", text_part(received))
    assert match, text_part(received)
    return match.group(0)


def address(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}@example.com"


# --- the tests -----------------------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.redis
def test_confirmation_email_delivered_by_real_worker_postgres_redis(harness, smtp):
    broker = harness.redis(11)
    database = harness.postgres()
    app = harness.app(database, broker)
    worker = harness.worker(database, broker)
    client = app.test_client()
    email = address("ada")

    sign_up(client, email)

    (received,) = smtp.wait_for(email, 1, timeout=MAIL_TIMEOUT)
    worker.wait_for_log(r"send_outbound_email\[[^\]]+\] succeeded in [\d.]+s: 'sent'", timeout=15)
    row = wait_sent(app, email)
    assert row.attempts == 1 and row.lease_owner is None and row.last_error is None

    assert received.sender == "news@news.example.org"
    assert [r.lower() for r in received.recipients] == [email]
    message = received.message
    assert message["To"] == email
    assert message["Message-ID"] and message["Message-ID"] in row.message
    assert message.get_content_type() == "multipart/alternative"
    assert message.get_body(preferencelist=("plain",)) is not None
    html = message.get_body(preferencelist=("html",))
    assert html is not None and "/confirm/" in html.get_content()
    unsubscribe = message["List-Unsubscribe"]
    assert re.search(r"<https://news\.example\.org/unsubscribe/[^>]+>", unsubscribe), unsubscribe
    assert re.search(r"<mailto:unsubscribe@news\.example\.org\?subject=[^>]+>", unsubscribe), unsubscribe
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"

    # The person clicks: the GET shows a button (link scanners change nothing), the button POSTs.
    path = urlsplit(confirm_url(received)).path
    page = client.get(path)
    assert page.status_code == 200
    with app.app_context():
        assert subscriptions.consent_record(email)["status"] == "pending"
    csrf_token = form_fields(page.get_data(as_text=True))["csrf_token"]
    done = client.post(path, data={"csrf_token": csrf_token})
    assert done.status_code == 200
    assert 'id="confirmed"' in done.get_data(as_text=True)

    with app.app_context():
        record = subscriptions.consent_record(email)
    assert record["status"] == "confirmed"
    assert [event["kind"] for event in record["events"]] == ["requested", "confirmed"]
    assert len(smtp.to(email)) == 1


@pytest.mark.postgres
@pytest.mark.redis
def test_signup_succeeds_while_broker_is_down_and_mail_goes_out_when_it_returns(harness, smtp):
    database = harness.postgres()
    web = harness.app(database, DOWN_BROKER)
    client = web.test_client()
    email = address("grace")

    started = time.monotonic()
    sign_up(client, email)
    assert time.monotonic() - started < 15, "publishing to a broker that is down must fail fast"
    # The signup's decision is taken (as a worker would) while the broker is still down: the wake-up
    # call for its confirmation is lost too. The next test covers the signup request itself.
    process_signups(web)

    (row,) = outbound_rows(web, email)
    assert row.status is OutboundStatus.PENDING and row.attempts == 0 and row.lease_owner is None
    assert smtp.to(email) == []

    # The broker comes back: a worker and beat on it, sweeping every second. The sweeper leaves a
    # row alone for SWEEP_GRACE (10s) after it was due, so the mail goes out about 10s after signup.
    broker = harness.redis(12)
    worker = harness.worker(database, broker, OUTBOX_SWEEP_SECONDS=1)
    harness.beat(database, broker, OUTBOX_SWEEP_SECONDS=1)

    (received,) = smtp.wait_for(email, 1, timeout=outbox.SWEEP_GRACE.total_seconds() + MAIL_TIMEOUT)
    sent = wait_sent(web, email)
    assert sent.attempts == 1
    assert received.message["Message-ID"] in row.message

    # Exactly once: later sweeps find nothing due, they do not send it again.
    sweep_done = r"sweep_outbox\[[^\]]+\] succeeded"
    worker.wait_for_log(sweep_done, timeout=15, count=worker.count(sweep_done) + 2)
    assert len(smtp.to(email)) == 1
    assert worker.count(r"send_outbound_email\[[^\]]+\] succeeded in [\d.]+s: 'sent'") == 1
    assert outbound_rows(web, email)[0].attempts == 1


@pytest.mark.postgres
@pytest.mark.redis
def test_a_signup_recorded_while_the_broker_is_down_is_decided_and_mailed_once_it_returns(harness, smtp):
    database = harness.postgres()
    web = harness.app(database, DOWN_BROKER)
    email = address("hopper")
    sign_up(web.test_client(), email)
    signed_up_at = utcnow()

    assert waiting_signups(web) == 1 and outbound_rows(web, email) == []  # recorded, not yet decided
    with web.app_context():
        with pytest.raises(InvalidInput):
            subscriptions.consent_record(email)

    # The broker comes back: beat's signup sweeper (every second here) hands the request to a worker
    # once SWEEP_GRACE has passed; the worker decides it and wakes itself for the confirmation.
    broker = harness.redis(14)
    worker = harness.worker(database, broker, SIGNUP_SWEEP_SECONDS=1)
    harness.beat(database, broker, SIGNUP_SWEEP_SECONDS=1)
    (received,) = smtp.wait_for(email, 1, timeout=signup_requests.SWEEP_GRACE.total_seconds() + MAIL_TIMEOUT)
    assert wait_sent(web, email).attempts == 1
    assert waiting_signups(web) == 0
    with web.app_context():
        record = subscriptions.consent_record(email)
    assert record["status"] == "pending"
    (requested,) = record["events"]
    # The ledger holds the request's own time, not the moment the worker got to it.
    assert requested["kind"] == "requested" and parse_iso(requested["at"]) <= signed_up_at
    assert requested["checkbox_value"] == "yes" and requested["source"].startswith("subscribe: ")

    sweep_done = r"sweep_signup_requests\[[^\]]+\] succeeded"
    worker.wait_for_log(sweep_done, timeout=15, count=worker.count(sweep_done) + 2)
    assert len(smtp.to(email)) == 1
    assert worker.count(r"process_signup\[[^\]]+\] succeeded in [\d.]+s: 'created'") == 1


def test_embedded_default_sqlite_and_sqla_broker_worker(harness, smtp, tmp_path):
    database = harness.sqlite()
    broker = f"sqla+sqlite:///{tmp_path / 'broker.sqlite'}"
    app = harness.app(database, broker)
    harness.worker(database, broker)
    client = app.test_client()
    email, api_email = address("lin"), address("api")

    sign_up(client, email)
    response = client.post("/api/v1/subscribe", json={"email": api_email, "consent": True})
    assert response.status_code == 202, response.get_data(as_text=True)

    for recipient in (email, api_email):
        (received,) = smtp.wait_for(recipient, 1, timeout=MAIL_TIMEOUT)
        assert confirm_url(received).startswith(BASE_URL + "/confirm/")
        assert wait_sent(app, recipient).attempts == 1


class Gate:
    """Holds the first DATA for one recipient inside the SMTP server, so its worker sits mid-send.

    stored=True: the server has stored the message and not yet answered 250 (SMTP's one duplicate
    window). stored=False: it has not stored it, and discards it if the client goes away.
    """

    def __init__(self, recipient: str, stored: bool):
        self.recipient = recipient.lower()
        self.stored = stored
        self.entered = threading.Event()
        self.release = threading.Event()
        self.used = False


def install_gates(smtp, monkeypatch, harness, gates: list[Gate]) -> None:
    original = smtp.handler.handle_DATA
    by_recipient = {gate.recipient: gate for gate in gates}

    async def handle_DATA(server, session, envelope):
        gate = next((by_recipient[r.lower()] for r in envelope.rcpt_tos
                     if r.lower() in by_recipient and not by_recipient[r.lower()].used), None)
        if gate is None:
            return await original(server, session, envelope)
        gate.used = True
        reply = await original(server, session, envelope) if gate.stored else "451 4.3.0 Discarded"
        gate.entered.set()
        deadline = time.monotonic() + 60
        # The client's death cancels this coroutine (aiosmtpd cancels the session on connection lost).
        while not gate.release.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return reply

    # aiosmtpd looks the hooks up once per connection: this applies from the next connection on.
    monkeypatch.setattr(smtp.handler, "handle_DATA", handle_DATA)
    harness.cleanup(lambda: [gate.release.set() for gate in gates])


@pytest.mark.postgres
@pytest.mark.redis
def test_worker_killed_mid_send_loses_nothing(harness, smtp, monkeypatch):
    lease = 2
    broker = harness.redis(13)
    database = harness.postgres()
    app = harness.app(database, broker, OUTBOX_LEASE_SECONDS=lease)
    settings = {"OUTBOX_LEASE_SECONDS": lease, "SMTP_TIMEOUT": 30}
    emails = [address(f"kill{i}") for i in range(5)]
    in_duplicate_window = Gate(emails[1], stored=True)
    before_stored = Gate(emails[3], stored=False)
    install_gates(smtp, monkeypatch, harness, [in_duplicate_window, before_stored])

    first = harness.worker(database, broker, **settings)
    client = app.test_client()
    for email in emails:
        sign_up(client, email)

    # Worker 1 sends emails[0], then sits in emails[1]'s DATA, which the server has stored: kill -9.
    smtp.wait_for(emails[0], 1, timeout=MAIL_TIMEOUT)
    assert in_duplicate_window.entered.wait(MAIL_TIMEOUT), first.log()
    first.kill9()
    (leased,) = outbound_rows(app, emails[1])
    assert leased.status is OutboundStatus.PENDING and leased.lease_owner is not None

    # Worker 2 takes the messages still queued: emails[2], then sits in emails[3]'s DATA, unstored.
    second = harness.worker(database, broker, **settings)
    smtp.wait_for(emails[2], 1, timeout=MAIL_TIMEOUT)
    assert before_stored.entered.wait(MAIL_TIMEOUT), second.log()
    second.kill9()

    # Worker 3 sends the last queued one. The two killed tasks' messages sit unacknowledged in Redis
    # (visibility_timeout is an hour), so it is the sweeper that recovers their rows, once the
    # killed workers' leases have run out.
    harness.worker(database, broker, **settings)
    smtp.wait_for(emails[4], 1, timeout=MAIL_TIMEOUT)

    def leases_expired():
        rows = [r for email in emails for r in outbound_rows(app, email)]
        return all(r.lease_expires_at is None or r.lease_expires_at < utcnow() for r in rows)

    wait_until(leases_expired, lease + 10, "the killed workers' leases to expire")
    with app.app_context():
        # The sweeper leaves fresh rows alone for SWEEP_GRACE: ask as if that much time had passed.
        assert outbox.sweep(utcnow() + outbox.SWEEP_GRACE + timedelta(seconds=1)) >= 2

    for email in emails:
        wait_sent(app, email, timeout=MAIL_TIMEOUT)
    smtp.wait_for(emails[1], 2, timeout=5)

    # Every address got its confirmation; only the one in SMTP's duplicate window got it twice,
    # both times with the same Message-ID and the same bytes, so the receiver can de-duplicate.
    for email in emails:
        copies = smtp.to(email)
        assert copies, email
        if len(copies) > 1:
            assert email == in_duplicate_window.recipient, (email, len(copies))
            assert len({c.message["Message-ID"] for c in copies}) == 1
            assert len({c.data for c in copies}) == 1
    assert {email: len(smtp.to(email)) for email in emails} == {
        emails[0]: 1, emails[1]: 2, emails[2]: 1, emails[3]: 1, emails[4]: 1}
    assert {email: outbound_rows(app, email)[0].attempts for email in emails} == dict.fromkeys(emails, 1)
    with app.app_context():
        assert outbox.sweep(utcnow() + outbox.SWEEP_GRACE + timedelta(seconds=1)) == 0  # nothing left
