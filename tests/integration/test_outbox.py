"""Transactional mail through a real SMTP server on loopback: sent once, 4xx deferred, 5xx failed."""

import re
from datetime import timedelta

import pytest
from sqlalchemy import select

from newsletter.extensions import db
from newsletter.models import OutboundEmail, OutboundStatus
from newsletter.services import outbox


@pytest.fixture
def queued(app, visitor):
    visitor.sign_up("reader@example.com")
    with app.app_context():
        return db.session.scalar(select(OutboundEmail.id))


def row(app, outbound_id):
    with app.app_context():
        found = db.session.get(OutboundEmail, outbound_id)
        db.session.expunge(found)
        return found


def send(app, outbound_id, clock):
    with app.app_context():
        return outbox.send_outbound(outbound_id, clock())


def test_sends_the_stored_message_once(app, smtp, clock, queued):
    assert send(app, queued, clock) == "sent"
    assert send(app, queued, clock) == "not-due"  # a second wake-up for the same row sends nothing
    received = smtp.to("reader@example.com")
    assert len(received) == 1
    assert received[0].sender == "news@news.example.org"
    assert received[0].message["Subject"].startswith("Please confirm your subscription")
    assert row(app, queued).status is OutboundStatus.SENT


def test_temporary_refusal_defers_with_backoff_then_sends(app, smtp, clock, queued):
    smtp.plan.rcpt["reader@example.com"] = ["451 4.7.1 Greylisted, try again later"]
    assert send(app, queued, clock) == "deferred"
    deferred = row(app, queued)
    assert deferred.attempts == 1 and "451" in deferred.last_error
    assert timedelta(seconds=45) <= deferred.next_attempt_at - clock() <= timedelta(seconds=75)
    assert send(app, queued, clock) == "not-due"  # not before its time
    clock.advance(minutes=2)
    assert send(app, queued, clock) == "sent"
    assert len(smtp.to("reader@example.com")) == 1


def test_permanent_refusal_fails_without_retry(app, smtp, clock, queued):
    smtp.plan.rcpt["reader@example.com"] = ["550 5.1.1 No such user"]
    assert send(app, queued, clock) == "failed"
    clock.advance(days=1)
    assert send(app, queued, clock) == "not-due"
    assert smtp.to("reader@example.com") == []
    assert "550" in row(app, queued).last_error


def test_dropped_line_after_data_is_retried_with_the_same_message_id(app, smtp, clock, queued):
    smtp.plan.drop_after_data["reader@example.com"] = 1
    assert send(app, queued, clock) == "deferred"
    clock.advance(minutes=3)
    assert send(app, queued, clock) == "sent"
    copies = smtp.to("reader@example.com")
    assert len(copies) == 2  # SMTP's own duplicate window: the server had it, we never heard 250
    assert copies[0].message["Message-ID"] == copies[1].message["Message-ID"]


def test_unreachable_relay_defers_and_expires_after_the_limit(app, clock, queued):
    app.config["SMTP_URL"] = "smtp://127.0.0.1:1"
    assert send(app, queued, clock) == "deferred"
    clock.advance(days=3, minutes=1)
    assert send(app, queued, clock) == "failed"


def test_a_leased_row_is_not_sent_by_a_second_worker_until_the_lease_expires(app, smtp, clock, queued):
    with app.app_context():
        assert outbox.claim(queued, clock()) is not None
        assert outbox.claim(queued, clock()) is None
    assert send(app, queued, clock) == "not-due"
    clock.advance(seconds=app.config["OUTBOX_LEASE_SECONDS"] + 1)
    assert send(app, queued, clock) == "sent"
    assert len(smtp.to("reader@example.com")) == 1


def test_sweeper_finds_rows_the_queue_lost(app, clock, queued):
    with app.app_context():
        assert outbox.due_ids(clock()) == []  # just enqueued: leave it to its own message
        clock.advance(seconds=11)
        assert outbox.due_ids(clock()) == [queued]
        outbox.send_outbound(queued, clock())
        assert outbox.due_ids(clock()) == []


# --- DKIM and the headers, on the bytes the relay received ------------------------------------------


def confirmation_as_received(app, visitor, smtp, clock) -> bytes:
    visitor.sign_up("reader@example.com", name="Zoë Ødegård")
    with app.app_context():
        outbound_id = db.session.scalar(select(OutboundEmail.id))
    assert send(app, outbound_id, clock) == "sent"
    (received,) = smtp.to("reader@example.com")
    return received.data


def test_the_confirmation_is_dkim_signed_by_both_keys_and_verifies_as_received(app, visitor, smtp, clock, dkim_keys):
    app.config.update(dkim_keys.settings())
    raw = confirmation_as_received(app, visitor, smtp, clock)
    assert dkim_keys.verified(raw) == ["rsa-sha256", "ed25519-sha256"]
    assert b"Please confirm" in raw and raw.isascii()


def test_the_confirmation_list_unsubscribe_is_plain_urls_on_the_wire(app, visitor, smtp, clock):
    raw = confirmation_as_received(app, visitor, smtp, clock)
    field = re.search(rb"^List-Unsubscribe:(.*?)\r\n(?![ \t])", raw, re.MULTILINE | re.DOTALL).group(1)
    assert re.fullmatch(rb" <https://news\.example\.org/unsubscribe/[\w.-]+>,\r\n"
                        rb" <mailto:unsubscribe@news\.example\.org\?subject=unsubscribe%20[\w.-]+>", field), field


def test_a_retried_confirmation_sends_the_same_signed_bytes(app, visitor, smtp, clock, dkim_keys):
    app.config.update(dkim_keys.settings())
    visitor.sign_up("reader@example.com")
    with app.app_context():
        outbound_id = db.session.scalar(select(OutboundEmail.id))
    smtp.plan.drop_after_data["reader@example.com"] = 1
    assert send(app, outbound_id, clock) == "deferred"
    clock.advance(minutes=3)
    assert send(app, outbound_id, clock) == "sent"
    first, second = smtp.to("reader@example.com")
    assert first.data == second.data
    assert dkim_keys.verified(second.data) == ["rsa-sha256", "ed25519-sha256"]
