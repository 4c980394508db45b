"""Readiness: can this process reach its database and its broker right now, within a few seconds?

Each check runs in a thread of its own with a deadline, so a server that swallows packets makes
/readyz say so in time instead of hanging the probe (and the check's own timeouts end the thread).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import Engine

OK = "ok"


def check_database(engine: Engine, timeout: float) -> None:
    with engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            # LOCAL: gone with the rollback, so the pooled connection keeps the app's own limits.
            connection.execute(text(f"SET LOCAL statement_timeout = {int(timeout * 1000)}"))
        connection.execute(text("SELECT 1"))
        connection.rollback()


def check_broker(url: str, timeout: float) -> None:
    if url.startswith("sqla+sqlite:"):
        _check_sqlite_file(url.removeprefix("sqla+sqlite:///"), timeout)
    elif url.startswith(("redis://", "rediss://")):
        import redis

        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
        try:
            client.ping()
        finally:
            client.close()
    else:
        from kombu import Connection

        with Connection(url, connect_timeout=timeout) as connection:
            connection.ensure_connection(max_retries=1, timeout=timeout)


def _check_sqlite_file(path: str, timeout: float) -> None:
    # The web app created the file at start; mode=rw refuses to create a new empty one elsewhere.
    connection = sqlite3.connect(f"{Path(path).as_uri()}?mode=rw", uri=True, timeout=timeout)
    try:
        connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
    finally:
        connection.close()


def run_checks(checks: dict, timeout: float) -> dict[str, str]:
    """{name: "ok" or "unreachable: why"}, all checks at once, within `timeout` (plus a little)."""
    results: dict[str, str] = {}

    def run(name, check):
        try:
            check()
            results[name] = OK
        except Exception as error:  # any failure is the answer: the probe reports it, it does not raise
            results[name] = f"unreachable: {_describe(error)}"

    threads = [threading.Thread(target=run, args=item, daemon=True, name=f"readyz-{item[0]}")
               for item in checks.items()]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout + 0.5
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return {name: results.get(name, f"unreachable: no answer within {timeout:g}s") for name in checks}


def _describe(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    first = lines[0] if lines else ""
    return f"{type(error).__name__}: {first}"[:200]
