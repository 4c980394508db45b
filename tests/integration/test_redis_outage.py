"""Redis away while signups come in: rate limits go on in the process's memory (logged once per
outage) and return to Redis when it does; a Redis that hangs costs one signup its timeouts, not
every signup. Each test has a redis-server of its own, which it stops, restarts or freezes."""

from __future__ import annotations

import logging
import os
import signal
import time
import uuid

import pytest
from sqlalchemy import func, select

from newsletter import create_app
from newsletter.extensions import db
from newsletter.models import OutboundEmail, OutboundStatus, SignupRequest
from tests.support.database import base_config
from tests.support.rate_limits import limit_counters, wait_until_counted_in_redis
from tests.support.redis_server import RedisServer
from tests.support.signups import process_signups

pytestmark = pytest.mark.redis

FALLBACK = "Rate limit storage unreachable - falling back to in-memory storage"
RECOVERED = "Rate limit storage recovered"


@pytest.fixture
def own_redis(tmp_path):
    if not RedisServer.available():
        pytest.skip("redis-server is not installed")
    server = RedisServer(tmp_path / "redis").start()
    yield server
    if server.process is not None and server.process.poll() is None:
        os.kill(server.process.pid, signal.SIGCONT)  # a frozen server cannot stop
    server.stop()


def redis_app(tmp_path, smtp, redis_url, **overrides):
    config = base_config(tmp_path, smtp.url, f"sqlite:///{tmp_path / 'outage.sqlite'}")
    config.update(REDIS_URL=redis_url, CELERY_BROKER_URL=redis_url, RATELIMIT_STORAGE_URI=redis_url, **overrides)
    app = create_app(config)
    with app.app_context():
        db.create_all()
    return app


def api_signup(client, email):
    return client.post("/api/v1/subscribe", json={"email": email, "consent": True})


def stored(app, model) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(model))


def limiter_records(caplog) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "flask-limiter"]


def test_rate_limits_go_on_in_memory_while_redis_is_down_and_return_to_it(tmp_path, smtp, own_redis, caplog):
    app = redis_app(tmp_path, smtp, own_redis.url(), SIGNUP_RATE_LIMIT="3 per minute")
    client = app.test_client()
    wait_until_counted_in_redis(client, own_redis)
    own_redis.flushall()  # the budget of 3 starts now
    caplog.set_level(logging.INFO, logger="flask-limiter")

    own_redis.stop()
    answers = [api_signup(client, f"down{i}@example.com").status_code for i in range(5)]

    # Memory counts from zero: three get through, the fourth and fifth are refused, as with Redis.
    assert answers == [202, 202, 202, 429, 429]
    assert stored(app, SignupRequest) == 3  # each stored, for a worker to decide
    assert limiter_records(caplog) == [(logging.WARNING, FALLBACK)] + [
        (logging.INFO, "ratelimit 3 per 1 minute (127.0.0.1) exceeded at endpoint: signup")] * 2

    own_redis.start_on(own_redis.port)  # empty: no persistence
    wait_until_counted_in_redis(client, own_redis)
    assert (logging.INFO, RECOVERED) in limiter_records(caplog)
    assert api_signup(client, "back@example.com").status_code == 202  # Redis' own count: a fresh budget
    assert [level for level, message in limiter_records(caplog) if message == FALLBACK] == [logging.WARNING]


def test_a_hung_redis_costs_one_signup_its_timeouts_and_the_next_ones_nothing(tmp_path, smtp, own_redis):
    app = redis_app(tmp_path, smtp, own_redis.url())
    client = app.test_client()
    wait_until_counted_in_redis(client, own_redis)
    assert api_signup(client, "before@example.com").status_code == 202  # the broker's pool is open

    os.kill(own_redis.process.pid, signal.SIGSTOP)  # connections are accepted, nothing is answered
    try:
        timings = []
        for i in range(5):
            started = time.monotonic()
            assert api_signup(client, f"hung{i}-{uuid.uuid4().hex[:6]}@example.com").status_code == 202
            timings.append(time.monotonic() - started)
    finally:
        os.kill(own_redis.process.pid, signal.SIGCONT)

    # The first waits for the limiter (1 s) and two publishes (2 s each, a reconnection between);
    # the broker is then left alone for a few seconds and the limiter counts in memory.
    assert timings[0] < 12, timings
    assert sum(timings[1:]) < 2, timings
    assert stored(app, SignupRequest) == 1 + 5  # each stored as sent; the worker's part, done here:
    process_signups(app)
    with app.app_context():
        rows = db.session.scalars(select(OutboundEmail).where(OutboundEmail.recipient.like("hung%"))).all()
    assert len(rows) == 5 and {(r.status, r.attempts) for r in rows} == {(OutboundStatus.PENDING, 0)}

    wait_until_counted_in_redis(client, own_redis)
    assert limit_counters(own_redis)
