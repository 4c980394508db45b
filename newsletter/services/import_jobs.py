"""The console's CSV import, in the background. The request checks the file and keeps it in an
ImportJob row, with its audit event, and wakes a worker; the worker imports it in importer's
batches. Each batch is one transaction: its subscribers, consent events and confirmation emails,
its bad rows, and the job's checkpoint (rows read and the counts so far). So a job is at every
moment either done and fully reported, or resumable from its last batch: a run that dies is
taken over once IMPORT_STALE_SECONDS pass without a batch (the broker's redelivery or the beat
sweeper), and no batch can be committed twice, since each one moves the checkpoint on only from
where its run found it, and only while that run holds the job.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import BinaryIO

from flask import current_app
from sqlalchemy import case, insert, or_, select, update

from ..errors import InvalidInput
from ..extensions import db
from ..models import ImportBadRow, ImportJob, ImportState, Operator
from ..queue import RUN_IMPORT, enqueue, worker_id
from . import importer, operators

MAX_FILE_BYTES = 32 * 1024 * 1024  # about 900,000 rows of a typical list
# One task's share of a job before it hands the rest on: well under Celery's task_time_limit, and
# other bulk work (a digest's batches) gets the worker in between.
TASK_SECONDS = 120
MAX_FAILED_RUNS = 5  # runs in a row that ended without committing a batch: then the job fails
OPEN = (ImportState.QUEUED, ImportState.RUNNING)
COUNTS = ("imported", "skipped_existing", "skipped_suppressed", "skipped_duplicate", "bad_rows")
SHOWN_BAD_ROWS = 500


def create_job(operator: Operator, filename: str, stream: BinaryIO, consent_source: str, confirmed: bool,
               ip: str | None, now: datetime) -> ImportJob:
    """Check the upload, keep it, audit it, wake a worker. Nothing is imported here: a file of any
    length costs the request one read. A broker out of reach leaves the job queued for the sweeper."""
    consent_source = importer.required_consent_source(consent_source)
    data = stream.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise InvalidInput("file", f"The file is larger than {MAX_FILE_BYTES // 2**20} MB: split it and import "
                                   "the parts one after the other.")
    total = importer.inspect_csv(io.BytesIO(data))
    job = ImportJob(operator_id=operator.id, ip=ip, filename=_shown_name(filename), consent_source=consent_source[:512],
                    confirmed=confirmed, state=ImportState.QUEUED, data=data, total_rows=total, rows_read=0,
                    imported=0, skipped_existing=0, skipped_suppressed=0, skipped_duplicate=0, bad_rows=0,
                    failed_runs=0, created_at=now, heartbeat_at=now)
    db.session.add(job)
    db.session.flush()
    operators.audit(operator, "subscribers.import_started", f"import_job:{job.id}", {
        "consent_source": job.consent_source, "confirmed": confirmed, "file": job.filename, "rows": total,
    }, ip, now)
    db.session.commit()
    _wake(job.id, now)
    return job


def run_job(job_id: int, now: Callable[[], datetime]) -> ImportState | None:
    """What the worker does: claim the job, import batches from its checkpoint on, and hand the rest
    to a new task after TASK_SECONDS. None when the job is not this run's to do (done already, or
    another run holds it and is alive)."""
    owner, started = worker_id(), now()
    if not _claim(job_id, owner, started):
        return None
    job = db.session.get(ImportJob, job_id)
    if job.failed_runs > MAX_FAILED_RUNS:
        return _fail(job, owner, started)
    try:
        return _import_from_checkpoint(job, owner, started, now)
    except Exception as error:  # recorded for the job's page, then raised for the worker's log and Sentry
        db.session.rollback()
        _set(job_id, ImportJob.lease_owner == owner, last_error=f"{type(error).__name__}: {error}"[:500])
        db.session.commit()
        raise


def _set(job_id: int, *conditions, **values) -> bool:
    """One conditional UPDATE of the job; True when it matched. The session's copy is not synchronised."""
    statement = update(ImportJob).where(ImportJob.id == job_id, *conditions).values(**values)
    return db.session.execute(statement, execution_options={"synchronize_session": False}).rowcount == 1


def _claim(job_id: int, owner: str, now: datetime) -> bool:
    """Queued, handed on (no owner), or held by a run that went silent: this run's now. Taking over
    from a silent run counts as a failed run; the job's next committed batch resets the count."""
    stale = now - stale_after()
    claimed = _set(job_id, ImportJob.state.in_(OPEN), or_(ImportJob.lease_owner.is_(None), ImportJob.heartbeat_at < stale),
                   state=ImportState.RUNNING, lease_owner=owner, heartbeat_at=now,
                   failed_runs=ImportJob.failed_runs + case((ImportJob.lease_owner.is_(None), 0), else_=1))
    if claimed:
        job = db.session.get(ImportJob, job_id)
        db.session.refresh(job)
        job.started_at = job.started_at or now
    db.session.commit()
    return claimed


def _import_from_checkpoint(job: ImportJob, owner: str, started: datetime,
                            now: Callable[[], datetime]) -> ImportState | None:
    job_id, source, confirmed, done = job.id, job.consent_source, job.confirmed, job.rows_read
    counts = {name: getattr(job, name) for name in COUNTS}
    stream = io.BytesIO(job.data)
    db.session.commit()  # no transaction stays open while the file is read up to the checkpoint
    for batch in importer.read_batches(stream, skip_rows=done):
        clock = now()
        # First, and conditional: a run that lost the job (or a second run of the same batch) stops here.
        if not _set(job_id, ImportJob.lease_owner == owner, ImportJob.rows_read == done,
                    rows_read=batch.rows_read, heartbeat_at=clock, failed_runs=0, last_error=None):
            db.session.rollback()
            return None
        outcome = importer.write_batch(batch.rows, source, confirmed, clock)
        if batch.bad_rows:
            db.session.execute(insert(ImportBadRow.__table__), [
                {"job_id": job_id, "line": line, "reason": reason[:500]} for line, reason in batch.bad_rows])
        counts["imported"] += outcome.imported
        counts["skipped_existing"] += outcome.skipped_existing
        counts["skipped_suppressed"] += outcome.skipped_suppressed
        counts["skipped_duplicate"] += batch.duplicates
        counts["bad_rows"] += len(batch.bad_rows)
        values = dict(counts)
        if batch.last:
            values.update(state=ImportState.DONE, finished_at=clock, data=None, lease_owner=None)
        _set(job_id, **values)
        if batch.last:
            _audit_completion(job_id, counts, clock)
        db.session.commit()
        importer.wake_confirmations(outcome.confirmation_ids)
        done = batch.rows_read
        if batch.last:
            return ImportState.DONE
        if now() - started >= timedelta(seconds=TASK_SECONDS):
            return _hand_on(job_id, owner, now())
    raise AssertionError("read_batches always ends with its last batch")


def _audit_completion(job_id: int, counts: dict, now: datetime, failed: str | None = None) -> None:
    job = db.session.get(ImportJob, job_id)
    detail = {"consent_source": job.consent_source, "confirmed": job.confirmed, **counts}
    if failed:
        detail["failed"] = failed
    operators.audit(job.operator, "subscribers.import", f"import_job:{job_id}", detail, job.ip, now)


def _hand_on(job_id: int, owner: str, now: datetime) -> ImportState:
    _set(job_id, ImportJob.lease_owner == owner, lease_owner=None)
    db.session.commit()
    _wake(job_id, now)
    return ImportState.RUNNING


def _fail(job: ImportJob, owner: str, now: datetime) -> ImportState:
    """Stopped for good: what its batches committed stays, counted; the operator sees why."""
    error = job.last_error or "its worker stopped"
    job.state, job.finished_at, job.data, job.lease_owner = ImportState.FAILED, now, None, None
    _audit_completion(job.id, {name: getattr(job, name) for name in COUNTS}, now,
                      failed=f"gave up after {job.failed_runs} runs without progress: {error}"[:500])
    db.session.commit()
    return ImportState.FAILED


def _wake(job_id: int, now: datetime) -> None:
    if enqueue(RUN_IMPORT, job_id):
        _set(job_id, enqueued_at=now)
        db.session.commit()


def stale_after() -> timedelta:
    return timedelta(seconds=current_app.config["IMPORT_STALE_SECONDS"])


def stalled_ids(now: datetime) -> list[int]:
    """Open jobs with no batch, claim or wake-up for IMPORT_STALE_SECONDS: a lost message or a dead run."""
    stale = now - stale_after()
    return list(db.session.scalars(
        select(ImportJob.id).where(ImportJob.state.in_(OPEN), ImportJob.heartbeat_at < stale,
                                   or_(ImportJob.enqueued_at.is_(None), ImportJob.enqueued_at < stale))
        .order_by(ImportJob.id)))


def sweep(now: datetime) -> int:
    """Beat's: wake a worker for every stalled job. Its run takes over from a dead one."""
    ids = stalled_ids(now)
    for job_id in ids:
        _wake(job_id, now)
    return len(ids)


def is_stalled(job: ImportJob, now: datetime) -> bool:
    return job.state in OPEN and now - job.heartbeat_at > stale_after()


def first_bad_rows(job_id: int, limit: int = SHOWN_BAD_ROWS) -> list[tuple[int, str]]:
    return [tuple(row) for row in db.session.execute(
        select(ImportBadRow.line, ImportBadRow.reason).where(ImportBadRow.job_id == job_id)
        .order_by(ImportBadRow.line).limit(limit))]


def recent_jobs(limit: int = 10) -> list[ImportJob]:
    return list(db.session.scalars(select(ImportJob).order_by(ImportJob.id.desc()).limit(limit)))


def _shown_name(filename: str | None) -> str:
    # Some browsers send the whole path; none of it but the name is of use, and nothing unprintable.
    name = (filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    return "".join(ch for ch in name if ch.isprintable()).strip()[:255] or "upload.csv"
