"""GET /metrics: off unless METRICS_ENABLED; counts what visitors and workers did (a real signup,
its confirmation email sent to a real SMTP server, the confirmation); backlogs and the send rate
read from the database; in multiprocess mode, sums what other processes wrote."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from newsletter import metrics
from newsletter.extensions import db
from newsletter.models import (
    Delivery,
    DeliveryStatus,
    Digest,
    DigestStatus,
    OutboundEmail,
    Subscriber,
    SubscriberStatus,
)
from newsletter.services import delivery, outbox
from tests.support.forms import form_fields
from tests.support.scripts import run_python

from .test_delivery import CONFIRMED, make_digest, run_all, start


def scrape(client) -> dict:
    response = client.get("/metrics")
    assert response.status_code == 200, response.status_code
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(response.get_data(as_text=True))
            for sample in family.samples}


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def confirm(client, smtp) -> int:
    """Follow the link of the confirmation email the SMTP server received and press its button."""
    text = smtp.handler.received[-1].message.get_body(preferencelist=("plain",)).get_content()
    path = re.search(r"https://news\.example\.org(/confirm/\S+)", text).group(1)
    csrf_token = form_fields(client.get(path).get_data(as_text=True))["csrf_token"]
    return client.post(path, data={"csrf_token": csrf_token}).status_code


@pytest.fixture
def metrics_on(app):
    app.config["METRICS_ENABLED"] = True
    return app


def test_metrics_are_off_unless_enabled(app, client):
    assert app.config["METRICS_ENABLED"] is False  # the default
    response = client.get("/metrics")
    assert response.status_code == 404
    assert "newsletter_" not in response.get_data(as_text=True)


def test_a_signup_its_email_and_its_confirmation_are_counted(metrics_on, client, visitor, smtp, clock):
    app = metrics_on
    before = scrape(client)
    assert visitor.sign_up("reader@example.com").status_code == 303
    signed_up = scrape(client)
    assert value(signed_up, "newsletter_signups_total", outcome="accepted", reason="") == \
        value(before, "newsletter_signups_total", outcome="accepted", reason="") + 1
    assert value(signed_up, "newsletter_outbox_backlog", status="pending") == 1

    with app.app_context():
        outbound_id = db.session.scalar(select(OutboundEmail.id))
        assert outbox.send_outbound(outbound_id, clock()) == "sent"
    assert len(smtp.handler.received) == 1
    assert confirm(client, smtp) == 200

    after = scrape(client)
    assert value(after, "newsletter_confirmations_total") == value(before, "newsletter_confirmations_total") + 1
    assert value(after, "newsletter_outbound_emails_total", outcome="sent") == \
        value(before, "newsletter_outbound_emails_total", outcome="sent") + 1
    assert value(after, "newsletter_outbox_backlog", status="pending") == 0
    with app.app_context():
        assert db.session.scalar(select(Subscriber.status)) is SubscriberStatus.CONFIRMED


def test_refused_signups_are_counted_by_reason(metrics_on, client, visitor):
    before = scrape(client)
    assert visitor.sign_up("reader@example.com", consent=None).status_code == 400
    assert visitor.sign_up("not-an-address", consent="yes").status_code == 400
    assert visitor.sign_up("bot@example.com", website="http://spam.example").status_code == 400
    assert visitor.sign_up("quick@example.com", wait=0).status_code == 400
    metrics_on.config["SIGNUP_RATE_LIMIT"] = "1 per hour"
    visitor.sign_up("first@example.com")
    assert visitor.sign_up("second@example.com").status_code == 429
    after = scrape(client)
    for reason in ("consent", "email", "honeypot", "too_fast", "rate_limited"):
        assert value(after, "newsletter_signups_total", outcome="refused", reason=reason) == \
            value(before, "newsletter_signups_total", outcome="refused", reason=reason) + 1, reason


def test_delivery_backlog_and_send_rate_come_from_the_database(metrics_on, client, clock):
    now = clock()
    with metrics_on.app_context():
        sending = Digest(subject="Going out", status=DigestStatus.SENDING, created_at=now, sent_at=now)
        done = Digest(subject="Just done", status=DigestStatus.DONE, created_at=now, sent_at=now - timedelta(hours=1))
        db.session.add_all([sending, done])
        db.session.flush()
        rows = [(sending, DeliveryStatus.PENDING, None)] * 3 + [(sending, DeliveryStatus.DEFERRED, None)] + \
            [(sending, DeliveryStatus.SENT, now - timedelta(seconds=10))] * 6 + \
            [(sending, DeliveryStatus.SENT, now - timedelta(minutes=5))] * 2 + \
            [(done, DeliveryStatus.SENT, now - timedelta(seconds=5))] * 4
        for number, (digest, status, sent_at) in enumerate(rows):
            person = Subscriber(email=f"reader{number}@example.com", status=SubscriberStatus.CONFIRMED, created_at=now)
            db.session.add(person)
            db.session.flush()
            db.session.add(Delivery(digest_id=digest.id, subscriber_id=person.id, status=status, attempts=0,
                                    next_attempt_at=now, sent_at=sent_at))
        db.session.commit()
    samples = scrape(client)
    assert value(samples, "newsletter_delivery_backlog", status="pending") == 3
    assert value(samples, "newsletter_delivery_backlog", status="deferred") == 1
    assert value(samples, "newsletter_send_rate_per_second") == pytest.approx((6 + 4) / 60)  # not 5 min ago


def test_recording_functions_refuse_what_they_do_not_know():
    assert [metrics.smtp_reply_class(code) for code in (250, 251, 421, 451, 550, 554, None, -1, 354)] == \
        ["2xx", "2xx", "4xx", "4xx", "5xx", "5xx", "connection_error", "connection_error", "connection_error"]
    with pytest.raises(ValueError, match="unknown delivery outcome 'bounced'"):
        metrics.record_delivery("bounced")
    with pytest.raises(ValueError, match="needs a reason"):
        metrics.record_signup("refused")
    with pytest.raises(ValueError):
        metrics.record_outbound("skipped")


RECORDING_PROCESS = """
    import os
    from newsletter import metrics

    for outcome in ("sent", "sent", "deferred", "failed"):
        metrics.record_delivery(outcome)
    metrics.record_delivery("skipped", count=1)  # as cancel does for its open rows
    for code in (250, 250, 451, 550, None):
        metrics.record_smtp_reply(code)
    metrics.mark_process_dead(os.getpid(), os.environ["PROMETHEUS_MULTIPROC_DIR"])  # as a worker that exits
"""


def test_multiprocess_mode_sums_what_every_worker_process_counted(metrics_on, client, tmp_path):
    directory = tmp_path / "prometheus"
    for _ in range(2):  # two worker processes, one after the other
        run_python(RECORDING_PROCESS, PROMETHEUS_MULTIPROC_DIR=directory)
    assert len(list(directory.glob("counter_*.db"))) == 2
    metrics_on.config["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    samples = scrape(client)
    assert value(samples, "newsletter_deliveries_total", outcome="sent") == 4
    assert value(samples, "newsletter_deliveries_total", outcome="skipped") == 2
    assert value(samples, "newsletter_smtp_replies_total", **{"class": "2xx"}) == 4
    assert value(samples, "newsletter_smtp_replies_total", **{"class": "4xx"}) == 2
    assert value(samples, "newsletter_smtp_replies_total", **{"class": "connection_error"}) == 2
    assert value(samples, "newsletter_outbox_backlog", status="pending") == 0  # the database's gauges too



def test_a_digest_sent_counts_its_deliveries_and_the_relays_replies(metrics_on, client, smtp, clock):
    with metrics_on.app_context():
        for email in CONFIRMED:
            db.session.add(Subscriber(email=email, status=SubscriberStatus.CONFIRMED, created_at=clock()))
        db.session.commit()
        digest = make_digest(clock)
    smtp.plan.rcpt["reader3@example.com"] = ["550 5.1.1 No such user"]
    before = scrape(client)
    start(metrics_on, digest, clock)
    mailer = delivery.Mailer()
    try:
        run_all(metrics_on, digest, clock, mailer)
    finally:
        mailer.close()
    after = scrape(client)

    def grew(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("newsletter_deliveries_total", outcome="sent") == len(CONFIRMED) - 1
    assert grew("newsletter_deliveries_total", outcome="failed") == 1
    assert grew("newsletter_smtp_replies_total", **{"class": "2xx"}) == len(CONFIRMED) - 1
    assert grew("newsletter_smtp_replies_total", **{"class": "5xx"}) == 1
