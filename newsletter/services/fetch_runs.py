"""The console's "fetch feeds now", in the background: the request records a run and wakes a
worker; the worker fetches every feed (services/feeds, as beat does) and keeps each report in the
run, where the page that waits on it reads them. No web worker ever waits on a feed.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from collections.abc import Callable

from ..extensions import db
from ..models import FeedFetchRun, FetchRunStatus, Operator
from ..queue import FETCH_FEEDS_NOW, enqueue
from . import feeds, operators

# A run unfinished this long has lost its worker or waits behind a long digest: the page stops
# waiting and says so (the run still completes if a worker picks it up later).
STALE_AFTER = timedelta(minutes=15)
UNFINISHED = (FetchRunStatus.QUEUED, FetchRunStatus.RUNNING)


def request_fetch(operator: Operator, urls: list[str], ip: str | None, now: datetime) -> FeedFetchRun:
    """Record the run and hand it to a worker. A broker out of reach leaves it NOT_QUEUED: nothing
    sweeps these up later, so the operator learns at once that nothing will happen."""
    run = FeedFetchRun(operator_id=operator.id, ip=ip, urls=list(dict.fromkeys(urls)),
                       status=FetchRunStatus.QUEUED, requested_at=now)
    db.session.add(run)
    db.session.commit()
    if not enqueue(FETCH_FEEDS_NOW, run.id):
        run.status, run.finished_at = FetchRunStatus.NOT_QUEUED, now
        db.session.commit()
    return run


def run_fetch(run_id: int, now: Callable[[], datetime]) -> FetchRunStatus | None:
    """What the worker does. A run already finished is left alone (a redelivered message)."""
    run = db.session.get(FeedFetchRun, run_id)
    if run is None or run.status not in UNFINISHED:
        return None
    started = now()
    run.status, run.started_at = FetchRunStatus.RUNNING, started
    urls = list(run.urls)
    db.session.commit()

    reports = feeds.fetch_all(urls, started)

    run = db.session.get(FeedFetchRun, run_id)
    finished = now()
    run.reports = [{"line": report.describe(), "failed": report.failed} for report in reports]
    run.status, run.finished_at = FetchRunStatus.DONE, finished
    operators.audit(run.operator, "articles.fetch", f"feed_fetch_run:{run.id}", {
        "feeds": len(reports),
        "failed": sum(report.failed for report in reports),
        "created": sum(report.articles.created for report in reports if report.articles),
        "updated": sum(report.articles.updated for report in reports if report.articles),
    }, run.ip, finished)
    db.session.commit()
    return run.status


def is_stale(run: FeedFetchRun, now: datetime) -> bool:
    return run.status in UNFINISHED and now - run.requested_at > STALE_AFTER
