"""Prepared statements straight through libpq (psycopg's pgconn), with text parameters.

A third of the worker's CPU is what cursor.execute() would cost on the hot path (docs/ARCHITECTURE.md,
"Delivery"). The connection runs in autocommit with synchronous_commit off: no BEGIN/COMMIT round
trips, no fsync wait.
"""

from __future__ import annotations

import psycopg
from psycopg import pq


class PreparedStatements:
    """A connection taken from the engine for good, with `statements` (name: SQL with $1...) prepared on it."""

    def __init__(self, statements: dict[bytes, bytes]):
        self.statements = statements
        self.raw = None
        self.pgconn = None
        self.url = None

    def execute(self, engine, name: bytes, params: list[bytes]) -> None:
        for attempt in (1, 2):
            if self.pgconn is None or self.url != str(engine.url):
                self._open(engine)
            result = self.pgconn.exec_prepared(name, params)
            if result.status == pq.ExecStatus.COMMAND_OK:
                return
            message = pq.error_message(result) or pq.error_message(self.pgconn)
            if self.pgconn.status == pq.ConnStatus.OK:
                raise psycopg.DatabaseError(f"{name.decode()}: {message}")
            self.close()  # the connection died (database restart): once more on a new one
            if attempt == 2:
                raise psycopg.OperationalError(f"{name.decode()}: {message}")

    def _open(self, engine) -> None:
        self.close()
        self.url = str(engine.url)
        self.raw = engine.raw_connection()
        driver = self.raw.driver_connection
        driver.autocommit = True
        driver.execute("SET synchronous_commit TO OFF")
        self.pgconn = driver.pgconn
        for name, sql in self.statements.items():
            result = self.pgconn.prepare(name, sql)
            if result.status != pq.ExecStatus.COMMAND_OK:
                raise psycopg.DatabaseError(pq.error_message(result))

    def close(self) -> None:
        if self.raw is not None:
            self.raw.invalidate()  # never back to the pool: its session settings are ours alone
        self.raw = self.pgconn = None
