"""The Celery app, configured from the Flask app, and the one way services wake workers.

The queue is a wake-up call, not the truth: every task names rows that are already committed,
and a periodic sweeper re-enqueues whatever a lost message left behind. So `enqueue` never raises:
a broker that is down delays work, it never loses it.
"""

from __future__ import annotations

import logging
import os
import socket
import sqlite3
import time
import uuid

from celery import Celery, Task
from flask import Flask, current_app

log = logging.getLogger(__name__)

TRANSACTIONAL_QUEUE = "transactional"  # confirmations never wait behind bulk mail
BULK_QUEUE = "bulk"
QUEUES = (TRANSACTIONAL_QUEUE, BULK_QUEUE)

PROCESS_SIGNUP = "workers.tasks.process_signup"  # a public signup, decided after its answer
SWEEP_SIGNUPS = "workers.tasks.sweep_signup_requests"
SEND_OUTBOUND = "workers.tasks.send_outbound_email"
SWEEP_OUTBOX = "workers.tasks.sweep_outbox"
SEND_BATCH = "workers.tasks.send_delivery_batch"
SWEEP_DELIVERIES = "workers.tasks.sweep_deliveries"
FETCH_FEEDS = "workers.tasks.fetch_feeds"
FETCH_FEEDS_NOW = "workers.tasks.fetch_feeds_now"  # the console's button: one FeedFetchRun
DIGEST_TICK = "workers.tasks.digest_schedule_tick"
SEND_SCHEDULED = "workers.tasks.send_scheduled_digests"
RUN_IMPORT = "workers.tasks.run_import_job"  # the console's CSV import: bulk work, on the bulk queue
SWEEP_IMPORTS = "workers.tasks.sweep_import_jobs"  # on bulk too: what it wakes waits there anyway

# Seconds one publish may wait on the broker's socket (connect, each reply). A consumer waits
# longer (its BRPOP blocks for a second); a publish is one short command.
PUBLISH_TIMEOUT = 2
# After a publish failed, this process skips publishing to that broker for this long: while a
# broker hangs, one signup in this window waits for its timeouts, not every one (the sweepers
# publish what was skipped).
PUBLISH_PAUSE_SECONDS = 5.0


class _Celery(Celery):
    def connection_for_write(self, url=None, **kwargs):
        kwargs["transport_options"] = {**_publish_timeouts(self.conf.broker_write_url),
                                       **(kwargs.get("transport_options") or {})}
        return super().connection_for_write(url, **kwargs)


def celery_init_app(app: Flask) -> Celery:
    class FlaskTask(Task):
        def __call__(self, *args, **kwargs):
            with app.app_context():
                return self.run(*args, **kwargs)

    broker_url = app.config["CELERY_BROKER_URL"]
    celery_app = _Celery(app.name, task_cls=FlaskTask)
    celery_app.conf.update(
        broker_url=broker_url,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=3,
        # Publishing from a web request must not hang when the broker is down: fail fast, the
        # sweeper publishes again later.
        task_publish_retry_policy={"max_retries": 1, "interval_start": 0, "interval_step": 0.2,
                                   "interval_max": 0.2},
        broker_transport_options=_transport_options(broker_url),
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=BULK_QUEUE,
        # Small, urgent work never waits behind a digest's batches.
        task_routes={name: {"queue": TRANSACTIONAL_QUEUE}
                     for name in (PROCESS_SIGNUP, SWEEP_SIGNUPS, SEND_OUTBOUND, SWEEP_OUTBOX, SWEEP_DELIVERIES,
                                  DIGEST_TICK, SEND_SCHEDULED)},
        task_time_limit=600,
        beat_schedule=_beat_schedule(app.config),
        beat_schedule_filename=str(app.config["INSTANCE_DIR"] / "celerybeat-schedule"),
        worker_hijack_root_logger=False,
    )
    celery_app.set_default()
    app.extensions["celery"] = celery_app
    return celery_app


def _beat_schedule(config) -> dict:
    schedule = {
        "sweep-signup-requests": {"task": SWEEP_SIGNUPS, "schedule": config["SIGNUP_SWEEP_SECONDS"]},
        "sweep-outbox": {"task": SWEEP_OUTBOX, "schedule": config["OUTBOX_SWEEP_SECONDS"]},
        "sweep-deliveries": {"task": SWEEP_DELIVERIES, "schedule": config["DELIVERY_SWEEP_SECONDS"]},
        # Digests an operator scheduled for a time of their choosing.
        "send-scheduled-digests": {"task": SEND_SCHEDULED, "schedule": 60.0},
        # Import jobs whose worker died, or whose message was lost, are handed on.
        "sweep-import-jobs": {"task": SWEEP_IMPORTS, "schedule": config["IMPORT_STALE_SECONDS"] / 2},
    }
    if config["FEED_URLS"]:
        schedule["fetch-feeds"] = {"task": FETCH_FEEDS, "schedule": config["FEED_FETCH_SECONDS"]}
    if config["DIGEST_SCHEDULE"]:
        # Beat only ticks; the service decides whether a slot of the schedule is due (and catches up once).
        schedule["digest-schedule"] = {"task": DIGEST_TICK, "schedule": 60.0}
    return schedule


def _transport_options(broker_url: str) -> dict:
    if broker_url.startswith("sqla+sqlite:"):
        _sqlite_wal(broker_url.removeprefix("sqla+sqlite:///"))
        # Web, worker and beat all write the broker file; wait for the lock rather than fail.
        return {"connect_args": {"timeout": 30}}
    if broker_url.startswith(("redis://", "rediss://")):
        # Longer than task_time_limit, so a task still running is never handed to a second worker.
        return {"visibility_timeout": 3600, "socket_connect_timeout": 3, "socket_timeout": 10}
    return {}


def _publish_timeouts(broker_url: str) -> dict:
    if broker_url.startswith(("redis://", "rediss://")):
        return {"socket_connect_timeout": PUBLISH_TIMEOUT, "socket_timeout": PUBLISH_TIMEOUT}
    return {}


def _sqlite_wal(path: str) -> None:
    if path in ("", ":memory:"):
        return
    from pathlib import Path

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path, timeout=30) as conn:  # WAL is a property of the file: set it once
        conn.execute("PRAGMA journal_mode=WAL")


_worker_id: tuple[int, str] | None = None


def worker_id() -> str:
    """Who holds a lease: unique per process (computed after a fork, never inherited)."""
    global _worker_id
    if _worker_id is None or _worker_id[0] != os.getpid():
        _worker_id = (os.getpid(), f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}")
    return _worker_id[1]


def waiting_tasks(queue_name: str = BULK_QUEUE) -> int | None:
    """How many tasks wait in the queue, not counting those a worker has taken; None when the broker
    cannot say (down, or a transport that does not count)."""
    from kombu.exceptions import ChannelError

    try:
        with current_app.extensions["celery"].connection_for_read() as connection:
            connection.ensure_connection(max_retries=0, timeout=3)
            try:
                return connection.default_channel.queue_declare(queue=queue_name, passive=True).message_count
            except ChannelError:
                return 0  # Redis keeps no empty queue: NOT_FOUND is an empty one
    except Exception as exc:  # any broker failure: the caller falls back on its own judgement
        log.warning("could not count the tasks waiting in %s: %s", queue_name, exc)
        return None


_publish_paused_until: dict[str, float] = {}  # broker URL: time.monotonic() of the next try


def enqueue(task_name: str, *args) -> bool:
    """Wake a worker for committed rows. False (and a log line) when the broker is out of reach."""
    celery_app = current_app.extensions["celery"]
    broker = celery_app.conf.broker_write_url
    if time.monotonic() < _publish_paused_until.get(broker, 0.0):
        return False  # it failed a moment ago: the sweeper will find the rows
    try:
        celery_app.send_task(task_name, args=args)
        return True
    except Exception as exc:  # any broker failure: the sweeper will find the rows
        _publish_paused_until[broker] = time.monotonic() + PUBLISH_PAUSE_SECONDS
        log.warning("could not enqueue %s%r, the sweeper will retry (publishing pauses for %gs): %s",
                    task_name, args, PUBLISH_PAUSE_SECONDS, exc)
        return False


def own_database_connections_per_child(flask_app: Flask) -> None:
    """A forked pool child must not share the parent's database sockets: it drops them at its start."""
    from celery.signals import worker_process_init

    from .extensions import db

    @worker_process_init.connect(weak=False)
    def _own_connections(**_):
        with flask_app.app_context():
            db.engine.dispose(close=False)
