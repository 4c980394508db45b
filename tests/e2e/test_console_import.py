"""The console's CSV import through real processes (PostgreSQL, the run's own redis-server, Celery
worker and beat): the upload answers at once; a worker killed with -9 in the middle of a batch
leaves whole batches only, and the job, handed on by beat's sweeper to a new worker, resumes from
its last committed batch and ends with one subscriber, one consent event, one confirmation email and
one wake-up of it for every row imported. An import of 30,000 rows once killed the web worker
(gunicorn's 30 s timeout) after 2,000 rows and 2,000 emails, with no audit event."""

from __future__ import annotations

import base64
import json
import sys
import time
import uuid

import pytest
from sqlalchemy import create_engine, func, select, text

from newsletter.clock import utcnow
from newsletter.extensions import db
from newsletter.models import AuditEvent, ConsentEvent, ImportJob, ImportState, OutboundEmail, Subscriber
from newsletter.queue import BULK_QUEUE, SEND_OUTBOUND, TRANSACTIONAL_QUEUE
from newsletter.services import importer, operators
from tests.support.forms import OPERATOR_PASSWORD, log_in
from tests.support.imports import job_id_of, post_import

from .harness import wait_until

pytestmark = pytest.mark.worker

ROWS = 5000
STALE_SECONDS = 3  # how soon beat hands a silent job on (the default is 60)
IMPORT_TIMEOUT = 600  # 5,000 confirmation emails rendered and signed on a busy 2-core machine


def bulk_worker(harness, database, broker):
    """A worker on the bulk queue only (imports and their sweeper): the confirmations it wakes stay
    queued on the transactional queue, to be counted."""
    argv = [sys.executable, "-m", "celery", "-A", "workers", "worker", "-Q", BULK_QUEUE, "--pool", "solo",
            "--loglevel", "INFO", "-n", f"import-{uuid.uuid4().hex[:12]}@%h"]
    process = harness.start(f"worker-{len(harness.processes) + 1}",
                            argv, harness.env(database, broker, IMPORT_STALE_SECONDS=STALE_SECONDS))
    process.wait_for_log(r"@\S+ ready\.")
    return process


def count(model, *conditions) -> int:
    return db.session.scalar(select(func.count()).select_from(model).where(*conditions))


def writing_mid_batch(engine) -> bool:
    """A worker's transaction that has written rows and not committed them: a batch under way."""
    with engine.connect() as conn:
        return bool(conn.scalar(text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND backend_xid IS NOT NULL")))


def queued_confirmations(redis_client) -> list[int]:
    ids = []
    for raw in redis_client.lrange(TRANSACTIONAL_QUEUE, 0, -1):
        message = json.loads(raw)
        if message["headers"]["task"] == SEND_OUTBOUND:
            ids.extend(json.loads(base64.b64decode(message["body"]))[0])
    return ids


def test_a_worker_killed_mid_import_leaves_a_job_that_resumes_with_one_confirmation_per_row(harness):
    database, broker = harness.postgres(), harness.redis(14)
    app = harness.app(database, broker)
    redis_client = harness.request.getfixturevalue("redis_server").client(14)
    observer = create_engine(database)
    harness.cleanup(observer.dispose)
    with app.app_context():
        operators.create_operator("admin@example.org", "admin", OPERATOR_PASSWORD, utcnow())
    client = app.test_client()
    log_in(client, "admin@example.org")
    worker = bulk_worker(harness, database, broker)

    rows = ("email,name\n" + "".join(f"p{n}@example.com,Person {n}\n" for n in range(ROWS))
            + "not-an-address,Nobody\np17@example.com,Again\n")
    started = time.monotonic()
    response = post_import(client, rows, confirmed=False)
    assert response.status_code == 303
    assert time.monotonic() - started < 5  # the request only keeps the file
    location = response.headers["Location"]
    job_id = job_id_of(location)

    def job() -> ImportJob:
        with app.app_context():
            found = db.session.get(ImportJob, job_id)
            db.session.expunge(found)
            return found

    # The first batch is committed, the second is being written: kill -9 there.
    wait_until(lambda: job().rows_read >= importer.BATCH_SIZE and writing_mid_batch(observer),
               IMPORT_TIMEOUT, "the worker to be writing the second batch")
    worker.kill9()
    killed = job()
    assert killed.state is ImportState.RUNNING and killed.rows_read < ROWS
    with app.app_context():
        # Whole batches only: what is committed is exactly what the checkpoint counts.
        assert count(Subscriber) == count(ConsentEvent) == count(OutboundEmail) == killed.imported
    page = client.get(location).get_data(as_text=True)
    assert 'http-equiv="refresh"' in page and f'id="rows-read">{killed.rows_read:,}<' in page

    harness.beat(database, broker, IMPORT_STALE_SECONDS=STALE_SECONDS, OUTBOX_SWEEP_SECONDS=3600)
    bulk_worker(harness, database, broker)
    def finished_page():
        html = client.get(location).get_data(as_text=True)
        return html if 'data-state="done"' in html else None

    page = wait_until(finished_page, IMPORT_TIMEOUT, "the resumed job to finish")
    assert "http-equiv" not in page

    done = job()
    assert (done.total_rows, done.rows_read, done.imported, done.skipped_duplicate, done.bad_rows,
            done.failed_runs) == (ROWS + 2, ROWS + 2, ROWS, 1, 1, 0)
    with app.app_context():
        assert count(Subscriber) == count(ConsentEvent) == count(OutboundEmail) == ROWS
        per_person = db.session.execute(select(OutboundEmail.subscriber_id, func.count())
                                        .group_by(OutboundEmail.subscriber_id)).all()
        assert len(per_person) == ROWS and {n for _, n in per_person} == {1}
        outbound_ids = sorted(db.session.scalars(select(OutboundEmail.id)))
        actions = list(db.session.scalars(select(AuditEvent.action).order_by(AuditEvent.id)))
        assert actions.count("subscribers.import_started") == 1 and actions.count("subscribers.import") == 1
    # And each confirmation's wake-up went out once (after its batch's commit, so the last ones may
    # still be on their way): none for the batch the kill rolled back.
    wait_until(lambda: len(queued_confirmations(redis_client)) >= ROWS, 30, "the last batch's wake-ups")
    assert sorted(queued_confirmations(redis_client)) == outbound_ids
    redis_client.close()
