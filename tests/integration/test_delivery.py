"""The delivery engine in one process against a real SMTP server: each recipient exactly once,
4xx deferred and retried, 5xx failed, unknown users suppressed, pause/resume/cancel."""

import json
import re
import time

import pytest
from sqlalchemy import func, select, text

from newsletter.extensions import db
from newsletter.models import (
    Article,
    Delivery,
    Digest,
    DigestArticle,
    DigestStatus,
    Subscriber,
    SubscriberStatus,
)
from newsletter.services import delivery, subscriptions
from newsletter.services.suppression import is_suppressed

CONFIRMED = [f"reader{i}@example.com" for i in range(12)]


def make_digest(clock, subject="This week") -> int:
    article = Article(key="https://news.example.org/a/1", url="https://news.example.org/a/1", title="Big story",
                      summary_html="<p>What happened.</p>", created_at=clock(), updated_at=clock(),
                      published_at=clock())
    digest = Digest(subject=subject, status=DigestStatus.DRAFT, created_at=clock())
    digest.items.append(DigestArticle(article=article, position=0))
    db.session.add(digest)
    db.session.commit()
    return digest.id


@pytest.fixture
def digest_id(app, clock):
    app.config.update(DELIVERY_BATCH_SIZE=5, DELIVERY_CLAIM_SIZE=3)
    with app.app_context():
        for i, email in enumerate(CONFIRMED):
            db.session.add(Subscriber(email=email, name=f"Reader {i}", status=SubscriberStatus.CONFIRMED,
                                      created_at=clock()))
        db.session.add(Subscriber(email="pending@example.com", status=SubscriberStatus.PENDING, created_at=clock()))
        db.session.add(Subscriber(email="gone@example.com", status=SubscriberStatus.UNSUBSCRIBED, created_at=clock()))
        db.session.commit()
        return make_digest(clock)


def start(app, digest_id, clock) -> int:
    with app.app_context():
        return delivery.start_sending(digest_id, clock())


@pytest.fixture(autouse=True)
def mailer():
    """A worker's SMTP connection and render cache, fresh for each test."""
    instance = delivery.Mailer()
    yield instance
    instance.close()


def run_all(app, digest_id, clock, mailer) -> dict:
    """What the workers do: every batch task of the digest, in this process."""
    totals = {"sent": 0, "deferred": 0, "failed": 0, "skipped": 0}
    with app.app_context():
        for first, last in delivery.batch_ranges(digest_id):
            for key, value in delivery.send_range(digest_id, first, last, clock, mailer).items():
                totals[key] += value
    return totals


def status(app, digest_id) -> dict:
    with app.app_context():
        return delivery.status(digest_id)


def received_by(smtp) -> dict[str, int]:
    got = {}
    for message in smtp.received:
        for address in message.recipients:
            got[address] = got.get(address, 0) + 1
    return got


def test_fan_out_writes_one_row_per_confirmed_subscriber(app, mailer, digest_id, clock):
    assert start(app, digest_id, clock) == len(CONFIRMED)
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Delivery)) == len(CONFIRMED)
        ranges = delivery.batch_ranges(digest_id)
        assert [last - first + 1 for first, last in ranges] == [5, 5, 2]
        with pytest.raises(Exception, match="only a draft can be sent"):
            delivery.start_sending(digest_id, clock())
    assert status(app, digest_id)["status"] == "sending"


def test_every_confirmed_subscriber_gets_the_digest_exactly_once(app, mailer, smtp, digest_id, clock):
    start(app, digest_id, clock)
    assert run_all(app, digest_id, clock, mailer)["sent"] == len(CONFIRMED)
    assert run_all(app, digest_id, clock, mailer)["sent"] == 0  # a second wake-up finds nothing to do
    assert received_by(smtp) == {email: 1 for email in CONFIRMED}
    assert status(app, digest_id) == {"status": "done", "total": 12, "pending": 0, "sent": 12, "deferred": 0,
                                      "failed": 0, "skipped": 0}
    message = smtp.to("reader3@example.com")[0].message
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["Subject"] == "This week"


def test_each_sent_row_records_when_and_one_attempt_even_after_its_connection_died(app, mailer, smtp, digest_id,
                                                                                  clock):
    start(app, digest_id, clock)
    with app.app_context():
        first, last = delivery.batch_ranges(digest_id)[0]
        assert delivery.send_range(digest_id, first, last, clock, mailer)["sent"] == 5
        if db.engine.dialect.name == "postgresql":  # the marking connection is cut, as a restart would
            pid = mailer.marker.pgconn.backend_pid
            db.session.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            deadline = time.monotonic() + 30
            db.session.commit()
            while db.session.scalar(text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid}):
                db.session.rollback()  # a transaction sees one snapshot of the statistics
                assert time.monotonic() < deadline, "the backend did not exit"
                time.sleep(0.05)
            db.session.rollback()
    run_all(app, digest_id, clock, mailer)
    assert received_by(smtp) == {email: 1 for email in CONFIRMED}
    with app.app_context():
        rows = db.session.execute(select(Delivery.status, Delivery.attempts, Delivery.sent_at, Delivery.lease_owner)).all()
        assert {(r.status.value, r.attempts, r.sent_at, r.lease_owner) for r in rows} == {("sent", 1, clock(), None)}


def test_temporary_refusal_defers_and_the_digest_is_not_done_until_it_is_sent(app, mailer, smtp, digest_id, clock):
    smtp.plan.rcpt["reader1@example.com"] = ["451 4.7.1 Greylisted"]
    smtp.plan.data["reader2@example.com"] = ["452 4.2.2 Mailbox full"]
    start(app, digest_id, clock)
    run_all(app, digest_id, clock, mailer)
    current = status(app, digest_id)
    assert (current["status"], current["sent"], current["deferred"]) == ("sending", 10, 2)
    clock.advance(minutes=5)
    with app.app_context():
        delivery.sweep(clock())  # the broker is down in these tests; this only must not fail
    run_all(app, digest_id, clock, mailer)
    assert status(app, digest_id)["status"] == "done"
    assert received_by(smtp) == {email: 1 for email in CONFIRMED}


def test_permanent_refusal_fails_and_unknown_user_is_suppressed(app, mailer, smtp, digest_id, clock, visitor):
    smtp.plan.rcpt["reader4@example.com"] = ["550 5.1.1 <reader4@example.com>: No such user"]
    smtp.plan.data["reader5@example.com"] = ["554 5.7.1 Message rejected as spam"]
    start(app, digest_id, clock)
    run_all(app, digest_id, clock, mailer)
    current = status(app, digest_id)
    assert (current["status"], current["sent"], current["failed"]) == ("done", 10, 2)
    with app.app_context():
        assert is_suppressed("reader4@example.com")
        assert not is_suppressed("reader5@example.com")
        bounced = db.session.scalar(select(Subscriber).where(Subscriber.email == "reader4@example.com"))
        assert bounced.status is SubscriberStatus.BOUNCED
    assert "reader4@example.com" not in received_by(smtp)


def test_dropped_line_after_data_is_retried_with_the_same_message_id(app, mailer, smtp, digest_id, clock):
    smtp.plan.drop_after_data["reader6@example.com"] = 1
    start(app, digest_id, clock)
    run_all(app, digest_id, clock, mailer)
    clock.advance(minutes=5)
    run_all(app, digest_id, clock, mailer)
    copies = smtp.to("reader6@example.com")
    assert len(copies) == 2  # SMTP's own window: the relay kept it, we never heard its 250
    assert copies[0].message["Message-ID"] == copies[1].message["Message-ID"]
    others = {k: v for k, v in received_by(smtp).items() if k != "reader6@example.com"}
    assert others == {email: 1 for email in CONFIRMED if email != "reader6@example.com"}
    assert status(app, digest_id)["status"] == "done"


def test_address_that_unsubscribed_after_the_fan_out_is_skipped(app, mailer, smtp, digest_id, clock):
    start(app, digest_id, clock)
    with app.app_context():
        subscriber = db.session.scalar(select(Subscriber).where(Subscriber.email == "reader7@example.com"))
        token = subscriptions.unsubscribe_token_for(subscriber, clock())
        subscriptions.unsubscribe(token, subscriptions.Context(None, None, "test"), clock())
    run_all(app, digest_id, clock, mailer)
    assert "reader7@example.com" not in received_by(smtp)
    assert status(app, digest_id)["skipped"] == 1


def test_pause_stops_claims_and_resume_continues_where_it_stopped(app, mailer, smtp, digest_id, clock):
    start(app, digest_id, clock)
    with app.app_context():
        first, last = delivery.batch_ranges(digest_id)[0]
        delivery.pause(digest_id, clock())
        assert delivery.send_range(digest_id, first, last, clock, mailer)["sent"] == 0
    assert smtp.received == []
    assert status(app, digest_id)["status"] == "paused"
    with app.app_context():
        delivery.resume(digest_id, clock())
    run_all(app, digest_id, clock, mailer)
    assert received_by(smtp) == {email: 1 for email in CONFIRMED}
    assert status(app, digest_id)["status"] == "done"


def test_cancel_skips_what_was_not_sent(app, mailer, smtp, digest_id, clock):
    start(app, digest_id, clock)
    with app.app_context():
        first, last = delivery.batch_ranges(digest_id)[0]
        delivery.send_range(digest_id, first, first + 1, clock, mailer)  # two sent before the cancel
        delivery.cancel(digest_id, clock())
    run_all(app, digest_id, clock, mailer)
    current = status(app, digest_id)
    assert (current["status"], current["sent"], current["skipped"], current["pending"]) == ("cancelled", 2, 10, 0)
    assert len(smtp.received) == 2


def test_expired_lease_of_a_dead_worker_is_claimed_again(app, mailer, smtp, digest_id, clock):
    start(app, digest_id, clock)
    with app.app_context():
        first, last = delivery.batch_ranges(digest_id)[0]
        held = delivery.claim(digest_id, first, last, clock(), 3)  # a worker that then died
        assert len(held) == 3
        assert len(delivery.claim(digest_id, first, last, clock(), 10)) == 2  # the rest, not the held ones
    clock.advance(seconds=app.config["DELIVERY_LEASE_SECONDS"] + 1)
    run_all(app, digest_id, clock, mailer)
    assert received_by(smtp) == {email: 1 for email in CONFIRMED}


def test_status_command_prints_the_contract_json(app, mailer, runner, digest_id, clock):
    start(app, digest_id, clock)
    result = runner.invoke(args=["digest", "status", str(digest_id), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"status": "sending", "total": 12, "pending": 12, "sent": 0,
                                         "deferred": 0, "failed": 0, "skipped": 0}
    assert runner.invoke(args=["digest", "status", "999", "--json"]).exit_code != 0
    assert "No digest with id 999" in runner.invoke(args=["digest", "pause", "999"]).output


# --- DKIM and the headers, on the bytes the relay received ------------------------------------------


def test_every_digest_is_dkim_signed_by_both_keys_and_verifies_as_received(app, mailer, smtp, digest_id, clock,
                                                                          dkim_keys):
    app.config.update(dkim_keys.settings())
    start(app, digest_id, clock)
    assert run_all(app, digest_id, clock, mailer)["sent"] == len(CONFIRMED)
    assert len(smtp.received) == len(CONFIRMED)
    for received in smtp.received:
        assert dkim_keys.verified(received.data) == ["rsa-sha256", "ed25519-sha256"]


def test_a_retried_digest_carries_the_same_message_id_and_a_signature_that_verifies(app, mailer, smtp, digest_id,
                                                                                  clock, dkim_keys):
    app.config.update(dkim_keys.settings())
    smtp.plan.drop_after_data["reader6@example.com"] = 1
    start(app, digest_id, clock)
    run_all(app, digest_id, clock, mailer)
    clock.advance(minutes=5)
    run_all(app, digest_id, clock, mailer)
    copies = smtp.to("reader6@example.com")
    assert len(copies) == 2 and copies[0].message["Message-ID"] == copies[1].message["Message-ID"]
    assert [dkim_keys.verified(copy.data) for copy in copies] == [["rsa-sha256", "ed25519-sha256"]] * 2


def test_the_digest_list_unsubscribe_is_plain_urls_on_the_wire(app, mailer, smtp, digest_id, clock):
    start(app, digest_id, clock)
    run_all(app, digest_id, clock, mailer)
    raw = smtp.to("reader3@example.com")[0].data
    field = re.search(rb"^List-Unsubscribe:(.*?)\r\n(?![ \t])", raw, re.MULTILINE | re.DOTALL).group(1)
    assert re.fullmatch(rb" <https://news\.example\.org/unsubscribe/[\w.-]+>,\r\n"
                        rb" <mailto:unsubscribe@news\.example\.org\?subject=unsubscribe%20[\w.-]+>", field), field
