"""Operations with real processes: a Celery worker that logs JSON lines naming its tasks, whose sends
show in the web's /metrics through PROMETHEUS_MULTIPROC_DIR, and gunicorn started the Procfile's way
with gunicorn.conf.py (JSON error and access logs, a killed worker's metrics marked dead)."""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import urllib.request
import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

from newsletter.queue import PROCESS_SIGNUP, SEND_OUTBOUND
from tests.support.clock import FrozenClock
from tests.support.forms import Visitor
from tests.support.services import free_port

from .harness import MAIL_TIMEOUT, wait_until

pytestmark = pytest.mark.worker


def embedded(harness) -> tuple[str, str]:
    return harness.sqlite(), f"sqla+sqlite:///{harness.tmp_path / 'broker.sqlite'}"


def json_records(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]  # each line one object


def sign_up(app, email: str) -> None:
    assert Visitor(app.test_client(), FrozenClock()).sign_up(email, wait=0).status_code == 303


def test_a_worker_in_json_mode_logs_one_object_per_line_naming_its_task(harness, smtp):
    database, broker = embedded(harness)
    app = harness.app(database, broker)
    worker = harness.worker(database, broker, LOG_FORMAT="json")
    sign_up(app, f"json-{uuid.uuid4().hex[:6]}@example.com")
    worker.wait_for_log(r"send_outbound_email\[[^\]]+\] succeeded", timeout=MAIL_TIMEOUT)

    records = json_records(worker.log())  # the banner too is left out: nothing but JSON lines
    succeeded = [r for r in records if "succeeded" in r["message"]]
    assert [r["task_name"] for r in succeeded] == [PROCESS_SIGNUP, SEND_OUTBOUND]  # the decision, then its mail
    done = succeeded[-1]
    assert done["task_name"] == SEND_OUTBOUND
    assert done["message"].startswith(f"Task {SEND_OUTBOUND}[{done['task_id']}] succeeded")
    (ready,) = [r for r in records if r["message"].endswith(" ready.")]
    assert "task_id" not in ready and "task_name" not in ready  # only inside a task


def test_what_a_worker_sent_shows_in_the_web_s_metrics(harness, smtp, tmp_path):
    database, broker = embedded(harness)
    shared = tmp_path / "prometheus"
    app = harness.app(database, broker, METRICS_ENABLED=True, PROMETHEUS_MULTIPROC_DIR=str(shared))
    worker = harness.worker(database, broker, PROMETHEUS_MULTIPROC_DIR=shared)
    sign_up(app, f"metrics-{uuid.uuid4().hex[:6]}@example.com")
    worker.wait_for_log(r"send_outbound_email\[[^\]]+\] succeeded", timeout=MAIL_TIMEOUT)

    text = app.test_client().get("/metrics").get_data(as_text=True)
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    assert samples[("newsletter_outbound_emails_total", (("outcome", "sent"),))] == 1  # counted by the worker
    assert samples[("newsletter_outbox_backlog", (("status", "pending"),))] == 0


def get(port: int, path: str, **headers):
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except OSError:
        return None, b""


def test_gunicorn_with_its_config_logs_json_and_marks_a_killed_worker_dead(harness, tmp_path):
    database, broker = embedded(harness)
    harness.app(database, broker)  # the schema
    port = free_port()
    env = harness.env(database, broker, LOG_FORMAT="json", METRICS_ENABLED="1",
                      PROMETHEUS_MULTIPROC_DIR=tmp_path / "prometheus")
    # The Procfile's web line, with python -m so that the virtualenv's gunicorn runs.
    argv = [sys.executable, "-m", "gunicorn", "--config", "gunicorn.conf.py", "--bind", f"127.0.0.1:{port}",
            "--workers", "2", "--access-logfile", "-", "wsgi:app"]
    web = harness.start("web", argv, env)
    web.wait_for_log(r"Booting worker with pid: \d+", count=2)
    wait_until(lambda: get(port, "/healthz")[0] == 200, 30, "gunicorn to answer /healthz")

    assert get(port, "/healthz", **{"X-Request-ID": "probe-42"}) == (200, b'{"status":"ok"}\n')
    web.wait_for_log(r'"logger": "gunicorn.access", "message": ".*GET /healthz .*", "request_id": "probe-42"\}')
    status, body = get(port, "/metrics")
    assert status == 200 and b"newsletter_outbox_backlog" in body

    victim = int(re.findall(r"Booting worker with pid: (\d+)", web.log())[0])
    os.kill(victim, signal.SIGKILL)
    web.wait_for_log(rf"worker {victim} exited: its metrics are marked dead")
    web.wait_for_log(r"Booting worker with pid: \d+", count=3)  # the master replaced it
    wait_until(lambda: get(port, "/readyz")[0] == 200, 30, "gunicorn to answer /readyz again")
    records = json_records(web.log())
    assert {"gunicorn.error", "gunicorn.access"} <= {r["logger"] for r in records}
