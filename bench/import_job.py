"""The console's CSV import of N pending rows through the production shape: gunicorn (the Procfile's
web line, its 30 s timeout), a Celery worker on the bulk queue and beat, PostgreSQL, and a
redis-server of the bench's own. It prints how long the upload took to answer, the progress the job's
page shows, the report, and the counts that say every row got its confirmation email queued once:
subscribers, consent events, outbox rows per subscriber, and the send tasks waiting in Redis.

    .venv/bin/python bench/import_job.py [--rows 100000] [--kill-at ROWS] [--timeout 3600] [--logs DIR]

With --kill-at, the worker is killed with SIGKILL once the job's checkpoint has passed ROWS and a
batch is being written, and a new worker is started: beat's sweeper hands it the job once it has
been silent for IMPORT_STALE_SECONDS (the default, 60 s), and it resumes from the last batch.

The worker does not consume the transactional queue, so that the confirmations' send tasks stay
there to be counted (in production the same worker line sends them).
"""

from __future__ import annotations

import argparse
import base64
import http.cookiejar
import json
import os
import re
import signal
import socket
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from contextlib import ExitStack
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_DIR))

from sqlalchemy import func, select, text  # noqa: E402

from bench.digest import PYTHON, SECRET_KEY, Database, Proc  # noqa: E402
from bench.processes import wait_for_health  # noqa: E402
from bench.redis_server import own_redis  # noqa: E402
from newsletter import create_app  # noqa: E402
from newsletter.clock import utcnow  # noqa: E402
from newsletter.extensions import db  # noqa: E402
from newsletter.models import (  # noqa: E402
    AuditEvent,
    ConsentEvent,
    ImportJob,
    OutboundEmail,
    Subscriber,
    SubscriberStatus,
)
from newsletter.queue import SEND_OUTBOUND, TRANSACTIONAL_QUEUE  # noqa: E402
from newsletter.services import operators  # noqa: E402

ADMIN, PASSWORD = "admin@example.org", "bench-admin-password"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
POLL = 1.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Browser:
    """An operator's browser: cookies kept, redirects shown rather than followed."""

    class _NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    def __init__(self, base: str):
        self.base = base
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()), self._NoRedirect())

    def open(self, path: str, body: bytes | None = None, content_type: str | None = None):
        request = urllib.request.Request(self.base + path, data=body)
        if content_type:
            request.add_header("Content-Type", content_type)
        try:
            with self.opener.open(request, timeout=120) as response:
                return response.status, response.headers, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.headers, error.read().decode(errors="replace")

    def csrf(self, path: str) -> str:
        return CSRF.search(self.open(path)[2]).group(1)

    def log_in(self) -> None:
        form = urllib.parse.urlencode({"csrf_token": self.csrf("/console/login"), "email": ADMIN,
                                       "password": PASSWORD}).encode()
        status, _, _ = self.open("/console/login", form, "application/x-www-form-urlencoded")
        assert status == 302, status

    def upload(self, content: bytes) -> tuple[int, str, float]:
        boundary = uuid.uuid4().hex
        parts = [(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n').encode()
                 for name, value in (("csrf_token", self.csrf("/console/subscribers/import")),
                                     ("consent_source", "bench: old list, 2025 signup form"))]
        parts.append((f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="list.csv"\r\n'
                      "Content-Type: text/csv\r\n\r\n").encode() + content + f"\r\n--{boundary}--\r\n".encode())
        started = time.perf_counter()
        status, headers, _ = self.open("/console/subscribers/import", b"".join(parts),
                                       f"multipart/form-data; boundary={boundary}")
        return status, headers.get("Location", ""), time.perf_counter() - started


def wait_for_web(browser: Browser, web: Proc, timeout: float = 60) -> None:
    wait_for_health(lambda: browser.open("/healthz")[0], web, timeout)


def page_numbers(html: str) -> dict:
    found = {key: re.search(rf'id="{key}">([\d,]+)<', html) for key in ("rows-read", "total-rows", "imported")}
    numbers = {key: int(match.group(1).replace(",", "")) for key, match in found.items() if match}
    numbers["state"] = re.search(r'data-state="(\w+)"', html).group(1)
    numbers["skipped"] = re.findall(r"<li>(Skipped, [^<]*|Bad rows: [^<]*)</li>", html)
    return numbers


def wake_ups(redis_url: str) -> list[int]:
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        ids = []
        for raw in client.lrange(TRANSACTIONAL_QUEUE, 0, -1):
            message = json.loads(raw)
            if message["headers"]["task"] == SEND_OUTBOUND:
                ids.extend(json.loads(base64.b64decode(message["body"]))[0])
        return ids
    finally:
        client.close()


def writing_a_batch(app) -> bool:
    with app.app_context(), db.engine.connect() as conn:
        return bool(conn.scalar(text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                     "AND pid <> pg_backend_pid() AND backend_xid IS NOT NULL")))


def checkpoint(app) -> ImportJob:
    with app.app_context():
        job = db.session.scalar(select(ImportJob))
        db.session.expunge(job)
        return job


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--kill-at", type=int, default=0, help="kill -9 the worker once this many rows are done")
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--logs", help="keep the processes' logs in this directory")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-import-")))
        logs = Path(args.logs) if args.logs else tmp
        logs.mkdir(parents=True, exist_ok=True)
        redis_server = own_redis(tmp / "redis")
        stack.callback(redis_server.stop)
        databases = Database(None)
        stack.callback(databases.close)
        url = databases.create()
        port = free_port()
        env = {k: v for k, v in os.environ.items() if k not in ("FLASK_DEBUG", "DEV_MAIL_VIEWER")}
        env.update(SECRET_KEY=SECRET_KEY, DATABASE_URL=url, REDIS_URL=redis_server.url(),
                   CELERY_BROKER_URL=redis_server.url(), BASE_URL=f"http://127.0.0.1:{port}",
                   SMTP_URL="smtp://127.0.0.1:1", INSTANCE_DIR=str(tmp / "instance"), PYTHONUNBUFFERED="1")
        app = create_app({"SQLALCHEMY_DATABASE_URI": url, "SECRET_KEY": SECRET_KEY, "INSTANCE_DIR": tmp / "instance",
                          "CELERY_BROKER_URL": redis_server.url(), "RATELIMIT_STORAGE_URI": "memory://"})
        stack.callback(lambda: databases.drop(url, app))
        release = Proc("release", [PYTHON, "-m", "flask", "--app", "wsgi", "db", "upgrade"], env, logs)
        assert release.popen.wait(timeout=300) == 0, release.log()
        with app.app_context():
            operators.create_operator(ADMIN, "admin", PASSWORD, utcnow())

        def start(name, argv):
            proc = Proc(name, argv, env, logs)
            stack.callback(proc.stop)
            return proc

        web = start("web", [PYTHON, "-m", "gunicorn", "--config", "gunicorn.conf.py", "--bind", f"127.0.0.1:{port}",
                            "--workers", "2", "--timeout", "30", "wsgi:app"])
        worker_argv = [PYTHON, "-m", "celery", "-A", "workers", "worker", "-Q", "bulk", "--pool", "solo",
                       "--loglevel", "INFO"]
        worker = start("worker-1", worker_argv + ["-n", f"bench-import-1-{uuid.uuid4().hex[:6]}@%h"])
        start("beat", [PYTHON, "-m", "celery", "-A", "workers", "beat", "--loglevel", "INFO"])
        worker.wait_for_log(" ready.")
        browser = Browser(f"http://127.0.0.1:{port}")
        wait_for_web(browser, web)

        content = ("email,name\n" + "".join(f"r{n}@example.com,Reader {n}\n" for n in range(1, args.rows + 1))
                   + "not-an-address,Nobody\nR17@Example.com,Reader 17 again\n").encode()
        print(f"import bench: {args.rows:,} pending rows + 1 bad + 1 repeated ({len(content) / 2**20:.1f} MB); "
              "gunicorn (2 workers, --timeout 30), 1 worker `celery -A workers worker -Q bulk --pool solo`, beat; "
              f"PostgreSQL (throw-away), a redis-server of its own; {os.cpu_count()} CPUs", flush=True)
        browser.log_in()
        status, location, answered = browser.upload(content)
        uploaded_at = time.perf_counter()
        print(f"upload: POST /console/subscribers/import answered {status} in {answered:.2f} s -> {location}", flush=True)
        assert status == 303 and "/console/subscribers/imports/" in location, status
        path = location.split(str(port), 1)[-1]

        shown, first_batch_at, killed_at, killed_rows, resumed_at, next_report = {}, None, None, 0, None, 0.1
        deadline = uploaded_at + args.timeout
        while time.perf_counter() < deadline:
            shown = page_numbers(browser.open(path)[2])
            elapsed = time.perf_counter() - uploaded_at
            if shown["rows-read"] and first_batch_at is None:
                first_batch_at = elapsed
            if killed_at is not None and resumed_at is None and shown["rows-read"] > killed_rows:
                resumed_at = elapsed
            if shown["rows-read"] >= next_report * shown["total-rows"] or shown["state"] != "running":
                print(f"  page at {elapsed:7.1f} s: {shown['state']}, rows read {shown['rows-read']:,} of "
                      f"{shown['total-rows']:,}, imported {shown['imported']:,}", flush=True)
                next_report = shown["rows-read"] / max(shown["total-rows"], 1) + 0.1
            if shown["state"] not in ("queued", "running"):
                break
            if args.kill_at and killed_at is None and shown["rows-read"] >= args.kill_at and writing_a_batch(app):
                os.kill(worker.pid, signal.SIGKILL)
                worker.popen.wait(timeout=10)
                killed_at, job = elapsed, checkpoint(app)
                killed_rows = job.rows_read
                with app.app_context():
                    committed = db.session.scalar(select(func.count()).select_from(Subscriber))
                print(f"  kill -9 of the worker at {elapsed:.1f} s, mid-batch: checkpoint {job.rows_read:,} rows, "
                      f"{job.imported:,} imported; subscribers committed: {committed:,}", flush=True)
                worker = start("worker-2", worker_argv + ["-n", f"bench-import-2-{uuid.uuid4().hex[:6]}@%h"])
            time.sleep(POLL)
        done_at = time.perf_counter() - uploaded_at
        job = checkpoint(app)
        print(f"done: {job.state.value} after {done_at:.1f} s from the upload's answer; worker time "
              f"{(job.finished_at - job.started_at).total_seconds():.1f} s from its first claim "
              f"({job.rows_read / (job.finished_at - job.started_at).total_seconds():,.0f} rows/s); "
              f"first batch on the page after {first_batch_at or 0:.1f} s", flush=True)
        if killed_at is not None:
            print(f"resume: the page moved past the killed checkpoint {((resumed_at or done_at) - killed_at):.1f} s "
                  f"after the kill (IMPORT_STALE_SECONDS=60 default, beat sweeping every 30 s)")
        print(f"report (job page): rows read {shown['rows-read']:,} of {shown['total-rows']:,}; imported "
              f"{shown['imported']:,}; " + "; ".join(shown["skipped"]))

        wake = []
        for _ in range(120):  # the last batch's wake-ups go out right after its commit
            wake = wake_ups(redis_server.url())
            if len(wake) >= job.imported:
                break
            time.sleep(0.5)
        with app.app_context():
            def count(model, *where):
                return db.session.scalar(select(func.count()).select_from(model).where(*where))

            per_person = dict(db.session.execute(select(OutboundEmail.subscriber_id, func.count())
                                                 .group_by(OutboundEmail.subscriber_id)).all())
            outbound_ids = set(db.session.scalars(select(OutboundEmail.id)))
            audits = [(a.action, a.detail) for a in db.session.scalars(select(AuditEvent).order_by(AuditEvent.id))]
            print(f"database: {count(Subscriber):,} subscribers ({count(Subscriber, Subscriber.status == SubscriberStatus.PENDING):,} "
                  f"pending), {count(ConsentEvent):,} consent events, {len(outbound_ids):,} confirmation emails in the "
                  f"outbox for {len(per_person):,} distinct subscribers (most for one subscriber: "
                  f"{max(per_person.values(), default=0)})")
        print(f"wake-ups: {len(wake):,} send tasks queued on '{TRANSACTIONAL_QUEUE}' for {len(set(wake)):,} distinct "
              f"outbox rows; repeated {len(wake) - len(set(wake)):,}; outbox rows without one "
              f"{len(outbound_ids - set(wake)):,}; for no outbox row {len(set(wake) - outbound_ids):,}")
        for action, detail in audits:
            if action.startswith("subscribers.import"):
                print(f"audit: {action} {detail}")


if __name__ == "__main__":
    main()
