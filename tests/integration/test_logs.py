"""Logging as the entry point sets it up: in a process of its own that imports wsgi.py, the way
gunicorn and the flask CLI do, a signup whose broker is down logs its warning as one JSON line that
carries the request's id (LOG_FORMAT=json), or as the plain line of old (the default)."""

from __future__ import annotations

import io
import json
import logging

import pytest

from newsletter.logs import ContextFilter, JsonFormatter, configure_logging, enter_task, leave_task
from tests.support.scripts import run_python

SIGNUP_SCRIPT = """
    import json, re
    import wsgi
    from newsletter.extensions import db

    with wsgi.app.app_context():
        db.create_all()
    client = wsgi.app.test_client()
    page = client.get("/subscribe").get_data(as_text=True)
    fields = dict(re.findall(r'<input type="hidden" name="(\\w+)" value="([^"]*)"', page))
    response = client.post("/subscribe", data={**fields, "email": "reader@example.com", "consent": "yes"},
                           headers={"X-Request-ID": "signup-7f3a"})
    print(json.dumps({"status": response.status_code, "request_id": response.headers["X-Request-ID"]}))
"""


def signup_env(tmp_path, **extra) -> dict:
    return dict(SECRET_KEY="test-secret-key", INSTANCE_DIR=tmp_path / "instance",
                DATABASE_URL=f"sqlite:///{tmp_path / 'logs.sqlite'}", CELERY_BROKER_URL="redis://127.0.0.1:1/0",
                SIGNUP_MIN_SECONDS=0, **extra)


def test_json_logs_are_one_object_per_line_with_the_request_id(tmp_path):
    result = run_python(SIGNUP_SCRIPT, **signup_env(tmp_path, LOG_FORMAT="json"))
    assert json.loads(result.stdout) == {"status": 303, "request_id": "signup-7f3a"}
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert records and all({"time", "level", "logger", "message"} <= record.keys() for record in records)
    enqueue = [r for r in records if r["logger"] == "newsletter.queue"]
    assert len(enqueue) == 1, records
    assert enqueue[0]["level"] == "WARNING"
    assert enqueue[0]["message"].startswith("could not enqueue workers.tasks.process_signup")
    assert enqueue[0]["request_id"] == "signup-7f3a"
    assert enqueue[0]["time"].endswith("Z")


def test_default_logs_are_the_plain_lines_of_old(tmp_path):
    result = run_python(SIGNUP_SCRIPT, **signup_env(tmp_path))
    assert json.loads(result.stdout)["status"] == 303
    assert "WARNING:newsletter.queue:could not enqueue workers.tasks.process_signup" in result.stderr
    assert "signup-7f3a" not in result.stderr


def test_an_unknown_log_format_stops_the_entry_point(tmp_path):
    with pytest.raises(AssertionError, match="LOG_FORMAT must be one of text, json, not 'yaml'"):
        run_python("import wsgi", **signup_env(tmp_path, LOG_FORMAT="yaml"))


def json_line(logger_name: str, emit) -> dict:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(ContextFilter())
    logger = logging.getLogger(logger_name)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        emit(logger)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
        logger.propagate = True
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1, lines
    return json.loads(lines[0])


def test_a_task_s_records_carry_its_id_and_name_and_tracebacks_stay_on_the_line():
    def emit(logger):
        enter_task("6b1c-task", "workers.tasks.send_outbound_email")
        try:
            raise RuntimeError("relay said\nsomething odd\u2028here")
        except RuntimeError:
            logger.exception("sending failed:\n%s", "two lines")
        finally:
            leave_task()

    record = json_line("tests.logs.task", emit)
    assert record["task_id"] == "6b1c-task"
    assert record["task_name"] == "workers.tasks.send_outbound_email"
    assert "request_id" not in record
    assert record["message"] == "sending failed:\ntwo lines"
    assert "RuntimeError: relay said" in record["exception"]
    after = json_line("tests.logs.task", lambda logger: logger.warning("outside any task"))
    assert "task_id" not in after and "task_name" not in after


def test_gunicorn_access_lines_carry_the_request_id_the_app_answered_with():
    atoms = {"h": "127.0.0.1", "r": "GET /healthz HTTP/1.1", "s": "200", "{x-request-id}o": "lb-99"}
    record = json_line("gunicorn.access", lambda logger: logger.info('%(h)s "%(r)s" %(s)s', atoms))
    assert record["message"] == '127.0.0.1 "GET /healthz HTTP/1.1" 200'
    assert record["request_id"] == "lb-99"


def test_configure_logging_leaves_one_handler_on_the_root():
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    try:
        stream = io.StringIO()
        configure_logging("json", "WARNING", stream=stream)
        configure_logging("json", "WARNING", stream=stream)  # twice: still one line per record
        logging.getLogger("tests.logs.root").warning("once")
        logging.getLogger("tests.logs.root").info("below the level")
        assert [json.loads(line)["message"] for line in stream.getvalue().splitlines()] == ["once"]
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved_handlers:
            root.addHandler(handler)
        root.setLevel(saved_level)
        logging.captureWarnings(False)
