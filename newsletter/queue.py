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


def celery_init_app(app: Flask) -> Celery:
    class FlaskTask(Task):
        def __call__(self, *args, **kwargs):
            with app.app_context():
                return self.run(*args, **kwargs)

    broker_url = app.config["CELERY_BROKER_URL"]
    celery_app = Celery(app.name, task_cls=FlaskTask)
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


def enqueue(task_name: str, *args) -> bool:
    """Wake a worker for committed rows. False (and a log line) when the broker is out of reach."""
    try:
        current_app.extensions["celery"].send_task(task_name, args=args)
        return True
    except Exception as exc:  # any broker failure: the sweeper will find the rows
        log.warning("could not enqueue %s%r, the sweeper will retry: %s", task_name, args, exc)
        return False
