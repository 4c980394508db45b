"""Fixtures: a fresh database per test on SQLite and PostgreSQL, a real SMTP server, a fixed clock.

Under CI=true a missing PostgreSQL, Redis or chromium fails the run instead of skipping the tests.
"""

from __future__ import annotations

import os
import re
import socket
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import create_engine, text

from newsletter import create_app
from newsletter.extensions import db

from .smtp_server import SMTPTestServer

PG_ADMIN_URL = os.environ.get("TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(service: str, available: bool, how: str) -> None:
    if available:
        return
    message = f"{service} is not available ({how})"
    if IN_CI:
        pytest.fail(f"{message}: CI must run these tests, not skip them", pytrace=False)
    pytest.skip(message)


def _port_open(host, port) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def require_redis() -> None:
    require("Redis", _port_open(REDIS_HOST, REDIS_PORT), f"{REDIS_HOST}:{REDIS_PORT}")


class FrozenClock:
    def __init__(self, start: datetime | None = None):
        self.current = start or datetime(2026, 11, 2, 9, 0, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.current

    def advance(self, **kwargs) -> None:
        self.current += timedelta(**kwargs)


@pytest.fixture
def clock():
    return FrozenClock()


@pytest.fixture(scope="session")
def smtp_server():
    server = SMTPTestServer().start()
    yield server
    server.stop()


@pytest.fixture
def smtp(smtp_server):
    smtp_server.handler.received.clear()
    smtp_server.handler.attempts.clear()
    smtp_server.handler.holding.clear()
    smtp_server.handler.mail_options.clear()
    smtp_server.handler.plan.__init__()
    return smtp_server


@pytest.fixture(scope="session")
def pg_server():
    try:
        engine = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with engine.connect():
            pass
    except Exception as exc:  # any connection failure means: no server to test against
        require("PostgreSQL", False, f"{PG_ADMIN_URL}: {exc.__class__.__name__}")
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def pg_database(pg_server):
    """One throw-away database for the session; tests empty it, they do not recreate it."""
    url = make_pg_database(pg_server)
    yield url
    drop_pg_database(pg_server, url)


def make_pg_database(pg_server) -> str:
    name = f"newsletter_test_{uuid.uuid4().hex[:10]}"
    with pg_server.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name


def drop_pg_database(pg_server, url: str) -> None:
    with pg_server.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)'))


def base_config(tmp_path, smtp_url: str, database_url: str, clock=None) -> dict:
    config = {
        "TESTING": True,
        "SECRET_KEY": "test-secret-key",
        "INSTANCE_DIR": tmp_path / "instance",
        "SQLALCHEMY_DATABASE_URI": database_url,
        "SMTP_URL": smtp_url,
        "SMTP_TIMEOUT": 10,
        "BASE_URL": "https://news.example.org",
        "MAIL_FROM": "Example News <news@news.example.org>",
        "SIGNUP_MIN_SECONDS": 2,
        "SIGNUP_RATE_LIMIT": "1000 per minute",
        # No worker in these tests: a broker that is not there, the way a broker outage looks.
        "CELERY_BROKER_URL": "redis://127.0.0.1:1/0",
        "RATELIMIT_STORAGE_URI": "memory://",
    }
    if clock is not None:
        config["CLOCK"] = clock
    return config


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'test.sqlite'}"
    return request.getfixturevalue("pg_database")


@pytest.fixture
def app(tmp_path, smtp, database_url, clock):
    app = create_app(base_config(tmp_path, smtp.url, database_url, clock))
    with app.app_context():
        db.create_all()
        _empty_tables()
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


def _empty_tables():
    if db.engine.dialect.name == "postgresql":
        names = ", ".join(f'"{t.name}"' for t in db.metadata.sorted_tables)
        db.session.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        db.session.commit()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


HIDDEN = re.compile(r'<input type="hidden" name="(\w+)" value="([^"]*)"')


def form_fields(html: str) -> dict:
    return dict(HIDDEN.findall(html))


class Visitor:
    """A person at the signup form: loads it, waits like a human, sends it."""

    def __init__(self, client, clock):
        self.client = client
        self.clock = clock

    def load(self, path="/subscribe") -> dict:
        response = self.client.get(path)
        assert response.status_code == 200
        return form_fields(response.get_data(as_text=True))

    def sign_up(self, email, consent="yes", path="/subscribe", wait=5, environ_base=None, **extra):
        fields = self.load(path)
        self.clock.advance(seconds=wait)
        data = {**fields, "email": email, **extra}
        if consent is not None:
            data["consent"] = consent
        return self.client.post(path, data=data, environ_base=environ_base or {})


@pytest.fixture
def visitor(client, clock):
    return Visitor(client, clock)


OPERATOR_PASSWORD = "a-long-enough-password"


def log_in(client, email, password=OPERATOR_PASSWORD) -> None:
    """Log a test client in to the console the way a browser does (the form's CSRF token)."""
    token = form_fields(client.get("/console/login").get_data(as_text=True))["csrf_token"]
    response = client.post("/console/login", data={"csrf_token": token, "email": email, "password": password})
    assert response.status_code == 302, response.get_data(as_text=True)
