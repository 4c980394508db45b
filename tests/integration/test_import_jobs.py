"""The console's CSV import as a background job, on SQLite and PostgreSQL: the upload answers at once,
the job's page shows progress and then the whole report, and a run that dies mid-batch leaves a job
that resumes from its last committed batch, every row imported and sent its confirmation once.

The worker's part runs here, in this process (`import_jobs.run_job`, what the task calls); the same
job through real worker processes killed with -9 is tests/e2e/test_console_import.py."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
from datetime import timedelta

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError

from newsletter.extensions import db
from newsletter.models import (
    AuditEvent,
    ConsentEvent,
    ImportJob,
    ImportState,
    OutboundEmail,
    Subscriber,
    SubscriberStatus,
)
from newsletter.queue import RUN_IMPORT
from newsletter.services import import_jobs, importer, operators

from tests.support.forms import OPERATOR_PASSWORD, log_in
from tests.support.imports import job_id_of, post_import

SMALL_BATCH = 40  # the batches' logic without 2,000 confirmation emails each


@pytest.fixture
def admin(app, clock):
    with app.app_context():
        operators.create_operator("admin@example.org", "admin", OPERATOR_PASSWORD, clock())
    client = app.test_client()
    log_in(client, "admin@example.org")
    return client


@pytest.fixture
def small_batches(monkeypatch):
    monkeypatch.setattr(importer, "BATCH_SIZE", SMALL_BATCH)


def pending_list(count: int) -> str:
    return "email,name\n" + "".join(f"p{n}@example.com,Person {n}\n" for n in range(count))


def count(model, *conditions) -> int:
    return db.session.scalar(select(func.count()).select_from(model).where(*conditions))


def job(job_id: int) -> ImportJob:
    db.session.expire_all()
    return db.session.get(ImportJob, job_id)


def audit(action: str) -> list[dict]:
    return [json.loads(detail) for detail in db.session.scalars(
        select(AuditEvent.detail).where(AuditEvent.action == action).order_by(AuditEvent.id))]


def one_confirmation_each() -> bool:
    """Every pending subscriber has exactly one confirmation email, and no email is for nobody."""
    per_person = select(OutboundEmail.subscriber_id, func.count().label("n")).group_by(OutboundEmail.subscriber_id)
    counts = [n for _, n in db.session.execute(per_person)]
    return counts == [1] * count(Subscriber) and count(OutboundEmail, OutboundEmail.subscriber_id.is_(None)) == 0


def upload_job(admin, content, **kwargs) -> int:
    response = post_import(admin, content, **kwargs)
    assert response.status_code == 303, response.get_data(as_text=True)
    return job_id_of(response.headers["Location"])


# --- the upload and the page ----------------------------------------------------------------------


def test_the_upload_answers_at_once_and_the_page_shows_progress_then_the_report(app, admin, clock):
    rows = pending_list(4500) + "not-an-address,Nobody\np7@example.com,Again\n"
    response = post_import(admin, rows, confirmed=True, filename="../../fakepath/list.csv")
    assert response.status_code == 303
    location = response.headers["Location"]
    job_id = job_id_of(location)
    with app.app_context():
        assert count(Subscriber) == 0  # nothing imported in the request
        queued = job(job_id)
        assert (queued.state, queued.total_rows, queued.rows_read, queued.filename) == (
            ImportState.QUEUED, 4502, 0, "list.csv")
        assert audit("subscribers.import_started") == [
            {"consent_source": "Old list, 2025 form", "confirmed": True, "file": "list.csv", "rows": 4502}]
        assert audit("subscribers.import") == []

    page = admin.get(location).get_data(as_text=True)
    assert '<meta http-equiv="refresh" content="2">' in page and "<script" not in page
    assert 'id="rows-read">0<' in page and 'id="total-rows">4,502<' in page
    assert "Waiting for a worker" in page

    with app.app_context():
        assert import_jobs.run_job(job_id, clock) is ImportState.DONE
        done = job(job_id)
        assert (done.rows_read, done.imported, done.skipped_duplicate, done.bad_rows) == (4502, 4500, 1, 1)
        assert done.data is None  # the file holds addresses: it is not kept past the job
        assert count(Subscriber, Subscriber.status == SubscriberStatus.CONFIRMED) == 4500
        assert audit("subscribers.import") == [{
            "consent_source": "Old list, 2025 form", "confirmed": True, "imported": 4500, "skipped_existing": 0,
            "skipped_suppressed": 0, "skipped_duplicate": 1, "bad_rows": 1}]
    page = admin.get(location).get_data(as_text=True)
    assert "http-equiv" not in page
    assert 'id="rows-read">4,502<' in page and 'id="imported">4,500<' in page
    assert re.findall(r"<tr><td>(\d+)</td><td>(.*?)</td></tr>", page)[0][0] == "4502"
    # The import page lists it among the recent ones.
    assert f"/console/subscribers/imports/{job_id}" in admin.get("/console/subscribers/import").get_data(as_text=True)


def test_a_second_run_of_a_finished_job_changes_nothing(app, admin, clock, small_batches):
    job_id = upload_job(admin, pending_list(50), confirmed=False)
    with app.app_context():
        assert import_jobs.run_job(job_id, clock) is ImportState.DONE
        assert import_jobs.run_job(job_id, clock) is None  # a redelivered message
        assert (count(Subscriber), count(OutboundEmail), count(ConsentEvent)) == (50, 50, 50)
        assert one_confirmation_each()
        assert len(audit("subscribers.import")) == 1


def test_every_bad_row_is_reported_on_the_page_and_in_the_csv(app, admin, clock):
    rows = "email\n" + "".join(f"bad{n}\n" for n in range(620)) + "ok@example.com\n"
    job_id = upload_job(admin, rows)
    with app.app_context():
        assert import_jobs.run_job(job_id, clock) is ImportState.DONE
    page = admin.get(f"/console/subscribers/imports/{job_id}").get_data(as_text=True)
    assert len(re.findall(r"<tr><td>\d+</td>", page)) == import_jobs.SHOWN_BAD_ROWS
    assert "…and 120 more." in page
    response = admin.get(f"/console/subscribers/imports/{job_id}/bad-rows.csv")
    assert response.mimetype == "text/csv" and response.headers["Cache-Control"] == "no-store"
    bad = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert [int(row["line"]) for row in bad] == list(range(2, 622))
    assert all(row["reason"].startswith("That email address is not valid") for row in bad)


def test_a_file_too_large_is_refused_at_the_upload(app, admin, monkeypatch):
    monkeypatch.setattr(import_jobs, "MAX_FILE_BYTES", 1000)
    response = post_import(admin, pending_list(100))
    assert response.status_code == 400
    assert "The file is larger than" in response.get_data(as_text=True)
    with app.app_context():
        assert count(ImportJob) == 0 and audit("subscribers.import_started") == []


# --- resuming ---------------------------------------------------------------------------------------


REFUSED = "p60@example.com"  # in the second batch of SMALL_BATCH


def refuse_one_address(engine) -> None:
    """The database refuses one row mid-batch, the way a crash or a lost connection ends a batch:
    the whole batch's transaction is rolled back."""
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.execute(text(f"CREATE TRIGGER refuse_one BEFORE INSERT ON subscriber WHEN NEW.email = '{REFUSED}' "
                              "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"))
        else:
            conn.execute(text(f"CREATE FUNCTION refuse_one() RETURNS trigger AS $$ BEGIN IF NEW.email = '{REFUSED}' "
                              "THEN RAISE EXCEPTION 'refused by the test'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql"))
            conn.execute(text("CREATE TRIGGER refuse_one BEFORE INSERT ON subscriber FOR EACH ROW "
                              "EXECUTE FUNCTION refuse_one()"))


def accept_it_again(engine) -> None:
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.execute(text("DROP TRIGGER IF EXISTS refuse_one"))
        else:
            conn.execute(text("DROP TRIGGER IF EXISTS refuse_one ON subscriber"))
            conn.execute(text("DROP FUNCTION IF EXISTS refuse_one()"))


@pytest.fixture
def refusing_database(app):
    with app.app_context():
        refuse_one_address(db.engine)
    yield
    with app.app_context():  # PostgreSQL's database outlives the test
        accept_it_again(db.engine)


def test_a_batch_that_fails_is_rolled_back_whole_and_the_job_resumes_from_the_last_committed_one(
        app, admin, clock, small_batches, refusing_database):
    job_id = upload_job(admin, pending_list(130), confirmed=False)
    stale = timedelta(seconds=app.config["IMPORT_STALE_SECONDS"])
    with app.app_context():
        with pytest.raises(DBAPIError, match="refused by the test"):
            import_jobs.run_job(job_id, clock)
        halfway = job(job_id)
        # The first batch, whole, with its consent events and confirmations; nothing of the second.
        assert (halfway.state, halfway.rows_read, halfway.imported) == (ImportState.RUNNING, SMALL_BATCH, SMALL_BATCH)
        assert "refused by the test" in halfway.last_error
        assert (count(Subscriber), count(ConsentEvent), count(OutboundEmail)) == (SMALL_BATCH,) * 3
        assert audit("subscribers.import") == []
        # Its run holds the job until it has been silent for IMPORT_STALE_SECONDS.
        assert import_jobs.stalled_ids(clock()) == []
        assert import_jobs.run_job(job_id, clock) is None

    clock.advance(seconds=stale.total_seconds() + 1)
    page = admin.get(f"/console/subscribers/imports/{job_id}").get_data(as_text=True)
    assert 'id="import-stalled"' in page and "refused by the test" in page
    assert 'id="rows-read">40<' in page and 'id="total-rows">130<' in page

    with app.app_context():
        accept_it_again(db.engine)
        assert import_jobs.stalled_ids(clock()) == [job_id]
        assert import_jobs.run_job(job_id, clock) is ImportState.DONE
        done = job(job_id)
        assert (done.rows_read, done.imported, done.failed_runs, done.last_error) == (130, 130, 0, None)
        assert (count(Subscriber), count(ConsentEvent), count(OutboundEmail)) == (130, 130, 130)
        assert one_confirmation_each()
        assert audit("subscribers.import")[0]["imported"] == 130


def test_a_resumed_job_counts_repeats_across_batches_as_repeats(app, admin, clock, small_batches, refusing_database):
    # p5 appears again after the checkpoint: the resumed run must still know the file had it.
    job_id = upload_job(admin, pending_list(130) + "p5@example.com,Again\nP100@EXAMPLE.COM,Again\n")
    with app.app_context():
        with pytest.raises(DBAPIError):
            import_jobs.run_job(job_id, clock)
        accept_it_again(db.engine)
    clock.advance(seconds=app.config["IMPORT_STALE_SECONDS"] + 1)
    with app.app_context():
        assert import_jobs.run_job(job_id, clock) is ImportState.DONE
        done = job(job_id)
        assert (done.imported, done.skipped_duplicate, done.skipped_existing) == (130, 2, 0)


def test_a_job_held_by_a_live_run_is_left_alone_and_a_silent_one_is_taken_over(app, admin, clock, small_batches):
    job_id = upload_job(admin, pending_list(90), confirmed=False)
    with app.app_context():
        db.session.execute(text("UPDATE import_job SET state = 'running', lease_owner = 'host:1:dead' WHERE id = :id"),
                           {"id": job_id})
        db.session.commit()
        assert import_jobs.run_job(job_id, clock) is None
        assert count(Subscriber) == 0
        clock.advance(seconds=app.config["IMPORT_STALE_SECONDS"] + 1)
        assert import_jobs.stalled_ids(clock()) == [job_id]
        assert import_jobs.run_job(job_id, clock) is ImportState.DONE
        assert (count(Subscriber), count(OutboundEmail)) == (90, 90) and one_confirmation_each()


def test_a_long_job_hands_itself_on_to_a_new_task_after_its_share_of_time(app, admin, clock, small_batches):
    job_id = upload_job(admin, pending_list(200), confirmed=True)

    def slow_clock():  # a minute passes between any two looks at the clock
        clock.advance(seconds=60)
        return clock()

    with app.app_context():
        assert import_jobs.run_job(job_id, slow_clock) is ImportState.RUNNING
        handed_on = job(job_id)
        assert 0 < handed_on.rows_read < 200 and handed_on.lease_owner is None
        assert count(Subscriber) == handed_on.imported
        runs = 1
        while job(job_id).state is not ImportState.DONE:
            # The next task takes it at once (no owner): it needs no sweeper.
            assert import_jobs.run_job(job_id, slow_clock) is not None
            runs += 1
            assert runs <= 10
        assert count(Subscriber) == 200 and job(job_id).imported == 200


def test_a_job_that_keeps_failing_stops_for_good_and_says_so(app, admin, clock, small_batches, refusing_database):
    job_id = upload_job(admin, pending_list(130), confirmed=True)
    with app.app_context():
        for _ in range(import_jobs.MAX_FAILED_RUNS + 1):
            with pytest.raises(DBAPIError):
                import_jobs.run_job(job_id, clock)
            clock.advance(seconds=app.config["IMPORT_STALE_SECONDS"] + 1)
        assert import_jobs.run_job(job_id, clock) is ImportState.FAILED
        failed = job(job_id)
        assert (failed.state, failed.imported, failed.data) == (ImportState.FAILED, SMALL_BATCH, None)
        [detail] = audit("subscribers.import")
        assert detail["imported"] == SMALL_BATCH and "refused by the test" in detail["failed"]
        assert import_jobs.stalled_ids(clock() + timedelta(days=1)) == []
    page = admin.get(f"/console/subscribers/imports/{job_id}").get_data(as_text=True)
    assert 'id="import-failed"' in page and "http-equiv" not in page


# --- the wake-ups -------------------------------------------------------------------------------------


BROKER_DB = 9


@pytest.fixture
def broker(app, redis_server):
    client = redis_server.client(BROKER_DB)
    client.flushdb()
    app.extensions["celery"].conf.broker_url = redis_server.url(BROKER_DB)
    yield client
    app.extensions["celery"].close()
    client.flushdb()
    client.close()


def queued_jobs(client) -> list:
    messages = [json.loads(raw) for raw in client.lrange("bulk", 0, -1)]
    assert all(message["headers"]["task"] == RUN_IMPORT for message in messages)
    return [json.loads(base64.b64decode(message["body"]))[0] for message in messages]


def test_the_upload_wakes_a_worker_on_the_bulk_queue_and_the_sweeper_wakes_one_again(app, admin, clock, broker):
    job_id = upload_job(admin, pending_list(3))
    assert queued_jobs(broker) == [[job_id]]
    with app.app_context():
        assert import_jobs.sweep(clock()) == 0  # its message may still be on its way
        clock.advance(seconds=app.config["IMPORT_STALE_SECONDS"] + 1)
        assert import_jobs.sweep(clock()) == 1
        assert import_jobs.sweep(clock()) == 0  # woken just now: not again before IMPORT_STALE_SECONDS
    assert queued_jobs(broker) == [[job_id], [job_id]]
