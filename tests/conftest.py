"""Fixtures: a fresh database per test on SQLite and PostgreSQL, a real SMTP server, a Redis server
of the run's own, a fixed clock. The helpers behind them live in tests/support.

Under CI=true a missing PostgreSQL, Redis or chromium fails the run instead of skipping the tests.
"""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text

from newsletter import create_app
from newsletter.extensions import db

from .support import shared_redis
from .support.clock import FrozenClock
from .support.database import PG_ADMIN_URL, base_config, drop_pg_database, make_pg_database
from .support.dkim_keys import make_keys
from .support.feed_server import FeedHost
from .support.forms import Visitor
from .support.redis_server import RedisServer
from .support.services import require
from .support.signups import with_signup_worker
from .support.smtp_server import SMTPTestServer

SHARED_REDIS_TEST = "test_shared_redis.py"


def pytest_sessionstart(session):
    session.config._planted_shared_redis = shared_redis.plant()


def pytest_sessionfinish(session):
    if getattr(session.config, "_planted_shared_redis", False):
        shared_redis.remove()


def pytest_collection_modifyitems(session, config, items):
    # The check that the shared Redis is untouched runs after everything else.
    items.sort(key=lambda item: item.path.name == SHARED_REDIS_TEST)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    require("redis-server", RedisServer.available(), "apt-get install redis-server")
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


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
    smtp_server.handler.connections = smtp_server.handler.disconnects = smtp_server.handler.noops = 0
    smtp_server.handler.plan.__init__()
    return smtp_server


@pytest.fixture(scope="module")
def feed_server():
    host = FeedHost().start()
    yield host
    host.stop()


@pytest.fixture
def feed_host(feed_server, app):
    """The feed host on loopback, emptied before and after the test, allowed as an intranet feed."""
    app.config["FEED_ALLOW_PRIVATE"] = True
    feed_server.reset()
    yield feed_server
    feed_server.reset()


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


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'test.sqlite'}"
    return request.getfixturevalue("pg_database")


@pytest.fixture
def app(tmp_path, smtp, database_url, clock):
    # No worker runs here: the client decides recorded signups after each request, as one would.
    app = with_signup_worker(create_app(base_config(tmp_path, smtp.url, database_url, clock)))
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


@pytest.fixture
def visitor(client, clock):
    return Visitor(client, clock)



@pytest.fixture(scope="session")
def dkim_keys(tmp_path_factory):
    """An RSA-2048 and an Ed25519 key, and the DNS records that publish them (dnsfunc for dkimpy)."""
    return make_keys(tmp_path_factory.mktemp("dkim"))
