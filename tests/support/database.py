"""Throw-away PostgreSQL databases and the app configuration every test starts from."""

from __future__ import annotations

import os
import uuid

import pytest
from sqlalchemy import text

PG_ADMIN_URL = os.environ.get("TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
# No worker in most tests: a broker that is not there, the way a broker outage looks.
DOWN_BROKER = "redis://127.0.0.1:1/0"


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
        "CELERY_BROKER_URL": DOWN_BROKER,
        "RATELIMIT_STORAGE_URI": "memory://",
    }
    if clock is not None:
        config["CLOCK"] = clock
    return config


def mail_config(tmp_path, **extra) -> dict:
    """An app that only renders and signs email: SQLite in tmp_path, no SMTP relay, an in-memory broker."""
    return {
        "TESTING": True, "SECRET_KEY": "test-secret-key", "INSTANCE_DIR": tmp_path / "instance",
        "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'unit.sqlite'}",
        "BASE_URL": "https://news.example.org", "MAIL_FROM": "Example News <news@news.example.org>",
        "SITE_NAME": "Example News", "MAIL_POSTAL_ADDRESS": "Example News Ltd, 1 High Street, Springfield",
        "CELERY_BROKER_URL": "memory://", **extra,
    }


# A test that needs PostgreSQL's concurrency: its `database_url` (and so `app`) on PostgreSQL only.
postgres_only = pytest.mark.parametrize("database_url", [pytest.param("postgres", marks=pytest.mark.postgres)],
                                        indirect=True)
