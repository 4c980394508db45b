"""/healthz and /readyz against real databases and brokers, reachable, missing, stopped or silent;
and the request id every response carries."""

from __future__ import annotations

import re
import socket
import time

import pytest

from newsletter import create_app
from newsletter.extensions import limiter
from tests.support.database import DOWN_BROKER, PG_ADMIN_URL, base_config
from tests.support.services import free_port

TIMEOUT = 0.5


def embedded_broker(tmp_path) -> str:
    return f"sqla+sqlite:///{tmp_path / 'broker.sqlite'}"


def make_app(tmp_path, smtp, database_url, broker_url, **overrides):
    config = base_config(tmp_path, smtp.url, database_url)
    config.update(CELERY_BROKER_URL=broker_url, READINESS_TIMEOUT=TIMEOUT, **overrides)
    return create_app(config)


def readyz(app):
    started = time.monotonic()
    response = app.test_client().get("/readyz")
    return response, time.monotonic() - started


@pytest.fixture
def silent_server():
    """A port that accepts connections and never says a word: a hung server, not a stopped one."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


def test_healthz_says_ok_even_with_database_and_broker_down(tmp_path, smtp):
    app = make_app(tmp_path, smtp, f"sqlite:///{tmp_path}/missing-dir/x.sqlite", DOWN_BROKER)
    response = app.test_client().get("/healthz")
    assert (response.status_code, response.get_json()) == (200, {"status": "ok"})
    assert response.headers["Cache-Control"] == "no-store"


def test_readyz_is_ok_with_the_database_and_the_embedded_broker(tmp_path, smtp, database_url):
    response, _ = readyz(make_app(tmp_path, smtp, database_url, embedded_broker(tmp_path)))
    assert response.status_code == 200, response.get_json()
    assert response.get_json() == {"status": "ok", "checks": {"database": "ok", "broker": "ok"}}


def test_readyz_is_ok_with_a_redis_broker(tmp_path, smtp, database_url, redis_server):
    response, _ = readyz(make_app(tmp_path, smtp, database_url, redis_server.url(5)))
    assert response.status_code == 200, response.get_json()


def test_readyz_names_a_broker_on_a_closed_port(tmp_path, smtp, database_url):
    response, elapsed = readyz(make_app(tmp_path, smtp, database_url, f"redis://127.0.0.1:{free_port()}/0"))
    body = response.get_json()
    assert response.status_code == 503
    assert body["status"] == "unavailable"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["broker"].startswith("unreachable: ")
    assert "refused" in body["checks"]["broker"].lower()
    assert elapsed < TIMEOUT + 1.5


def test_readyz_names_an_embedded_broker_whose_file_cannot_open(tmp_path, smtp):
    app = make_app(tmp_path, smtp, f"sqlite:///{tmp_path / 'db.sqlite'}", embedded_broker(tmp_path))
    (tmp_path / "broker.sqlite").unlink()
    (tmp_path / "broker.sqlite").mkdir()  # in its place, something that is no database file
    body = app.test_client().get("/readyz").get_json()
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["broker"].startswith("unreachable: OperationalError")


def test_a_broker_that_never_answers_does_not_hang_the_probe(tmp_path, smtp, silent_server):
    app = make_app(tmp_path, smtp, f"sqlite:///{tmp_path / 'db.sqlite'}", f"redis://127.0.0.1:{silent_server}/0")
    response, elapsed = readyz(app)
    assert response.status_code == 503
    assert response.get_json()["checks"]["broker"].startswith("unreachable: ")
    assert elapsed < TIMEOUT + 1.5


@pytest.mark.postgres
def test_readyz_names_a_postgres_database_that_does_not_exist(tmp_path, smtp, pg_server):
    missing = PG_ADMIN_URL.rsplit("/", 1)[0] + "/newsletter_test_no_such_database"
    response, elapsed = readyz(make_app(tmp_path, smtp, missing, embedded_broker(tmp_path)))
    body = response.get_json()
    assert response.status_code == 503
    assert body["checks"]["broker"] == "ok"
    assert body["checks"]["database"].startswith("unreachable: OperationalError")
    assert "newsletter_test_no_such_database" in body["checks"]["database"]


def test_readyz_names_a_database_server_that_is_stopped(tmp_path, smtp):
    stopped = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/newsletter"
    response, elapsed = readyz(make_app(tmp_path, smtp, stopped, embedded_broker(tmp_path)))
    body = response.get_json()
    assert response.status_code == 503
    assert body == {"status": "unavailable",
                    "checks": {"database": body["checks"]["database"], "broker": "ok"}}
    assert body["checks"]["database"].startswith("unreachable: OperationalError")
    assert elapsed < TIMEOUT + 1.5


def test_a_database_server_that_never_answers_does_not_hang_the_probe(tmp_path, smtp, silent_server):
    hung = f"postgresql+psycopg://postgres@127.0.0.1:{silent_server}/newsletter"
    response, elapsed = readyz(make_app(tmp_path, smtp, hung, embedded_broker(tmp_path)))
    assert response.status_code == 503
    assert response.get_json()["checks"]["database"] == f"unreachable: no answer within {TIMEOUT:g}s"
    assert elapsed < TIMEOUT + 1.5


@pytest.fixture
def no_default_limit_after():
    yield
    # The limiter is one object per process and keeps the first app's default limits for every
    # later app: later tests must not find "2 per minute" on every route.
    limiter.limit_manager.set_default_limits([])


def test_probes_are_outside_rate_limits_and_need_no_login(tmp_path, smtp, no_default_limit_after):
    app = make_app(tmp_path, smtp, f"sqlite:///{tmp_path / 'db.sqlite'}", embedded_broker(tmp_path),
                   RATELIMIT_DEFAULT="2 per minute")
    client = app.test_client()
    assert [client.get("/healthz").status_code for _ in range(5)] == [200] * 5
    assert [client.get("/readyz").status_code for _ in range(3)] == [200] * 3


def test_every_response_echoes_a_sane_request_id_or_gets_a_new_one(tmp_path, smtp):
    client = make_app(tmp_path, smtp, f"sqlite:///{tmp_path / 'db.sqlite'}", DOWN_BROKER).test_client()
    assert client.get("/healthz", headers={"X-Request-ID": "lb-4f2a.9:x_1"}).headers["X-Request-ID"] == "lb-4f2a.9:x_1"
    for bad in ("x" * 129, "has space", "quote\"d", "-leading-dash", ""):
        echoed = client.get("/", headers={"X-Request-ID": bad}).headers["X-Request-ID"]
        assert re.fullmatch(r"[0-9a-f]{32}", echoed), (bad, echoed)
    first, second = (client.get("/nowhere").headers["X-Request-ID"] for _ in range(2))
    assert first != second
