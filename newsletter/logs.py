"""Logging of every process, configured once by its entry point (wsgi.py, workers/), never by create_app.

LOG_FORMAT=text (the default) prints the plain `LEVEL:logger:message` lines the service always
printed; LOG_FORMAT=json prints one JSON object per line: time, level, logger, message, and
`request_id` in a web request or `task_id` and `task_name` in a Celery task.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import uuid
from datetime import datetime, timezone

from flask import Flask, g, has_request_context, request

FORMATS = ("text", "json")
TEXT_FORMAT = logging.BASIC_FORMAT
REQUEST_ID_HEADER = "X-Request-ID"
# An id from a proxy is kept only when it is a short plain token: nothing that could forge a log line.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
CONTEXT_FIELDS = ("request_id", "task_id", "task_name")

_task: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar("newsletter_task", default=None)


def configure_logging(log_format: str = "text", level: str = "INFO", stream=None) -> None:
    """The root logger's one handler. Raises ValueError for a LOG_FORMAT it does not know."""
    if log_format not in FORMATS:
        raise ValueError(f"LOG_FORMAT must be one of {', '.join(FORMATS)}, not {log_format!r}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(log_format == "json")  # else a warning would print its own two plain lines


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        # ASCII escapes: no character in a message (U+2028 included) can split the line.
        return json.dumps(entry, ensure_ascii=True, default=str)


class ContextFilter(logging.Filter):
    """Puts the request id or the task's id and name on every record that passes the handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = _request_id_of(record)
        task = _task.get()
        record.task_id, record.task_name = task if task else (None, None)
        return True


def _request_id_of(record: logging.LogRecord) -> str | None:
    if has_request_context():
        return current_request_id()
    if record.name == "gunicorn.access" and isinstance(record.args, dict):
        return record.args.get("{x-request-id}o")  # gunicorn's atoms: the response header we set
    return None


def current_request_id() -> str:
    """This request's id: the caller's X-Request-ID when it is a sane token, else a new one."""
    request_id = g.get("request_id")
    if request_id is None:
        incoming = request.headers.get(REQUEST_ID_HEADER, "")
        request_id = incoming if _SANE_REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex
        g.request_id = request_id
    return request_id


def register_request_ids(app: Flask) -> None:
    @app.before_request
    def assign_request_id():
        current_request_id()  # returns nothing: a value would become the response

    @app.after_request
    def echo_request_id(response):
        response.headers[REQUEST_ID_HEADER] = current_request_id()
        return response


def enter_task(task_id: str, task_name: str) -> None:
    _task.set((task_id, task_name))


def leave_task() -> None:
    _task.set(None)


def gunicorn_logconfig(log_format: str) -> dict | None:
    """gunicorn's own error and access logs in the same format (None: gunicorn's defaults)."""
    if log_format != "json":
        return None
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": ContextFilter}},
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr",
                                "formatter": "json", "filters": ["context"]}},
        "loggers": {"gunicorn.error": {"level": "INFO", "handlers": ["stderr"], "propagate": False},
                    "gunicorn.access": {"level": "INFO", "handlers": ["stderr"], "propagate": False}},
        "root": {"level": "INFO", "handlers": ["stderr"]},
    }
