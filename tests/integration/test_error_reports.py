"""Error reports: with SENTRY_DSN set, the entry point sends an unhandled error of a request to the
DSN's server (here a real HTTP server on loopback); without it, nothing is sent anywhere."""

from __future__ import annotations

import json

import pytest

from tests.support.http_sink import HttpSink
from tests.support.scripts import run_python

FAILING_REQUEST = """
    import sentry_sdk
    import wsgi

    @wsgi.app.get("/fails-for-the-test")
    def fails():
        raise RuntimeError("the test's deliberate failure")

    response = wsgi.app.test_client().get("/fails-for-the-test?email=reader@example.com",
                                          headers={"X-Request-ID": "report-1"})
    print(response.status_code, sentry_sdk.get_client().is_active())
    sentry_sdk.flush(timeout=10)
"""


@pytest.fixture
def sink():
    server = HttpSink().start()
    yield server
    server.stop()


def env(tmp_path, **extra) -> dict:
    return dict(SECRET_KEY="test-secret-key", INSTANCE_DIR=tmp_path / "instance",
                DATABASE_URL=f"sqlite:///{tmp_path / 'reports.sqlite'}", CELERY_BROKER_URL="redis://127.0.0.1:1/0",
                **extra)


def envelope_items(body: bytes) -> list[dict]:
    """The JSON lines of a Sentry envelope: a header, then item header and payload pairs."""
    items = []
    for line in body.split(b"\n"):
        try:
            items.append(json.loads(line))
        except ValueError:
            continue  # a binary payload (an attachment), not ours
    return items


def test_an_error_in_a_request_is_posted_to_the_dsn_server(tmp_path, sink):
    result = run_python(FAILING_REQUEST, **env(tmp_path, SENTRY_DSN=f"http://publickey@127.0.0.1:{sink.port}/42"))
    assert result.stdout.split() == ["500", "True"]
    posts = sink.wait_for(lambda post: post.path == "/api/42/envelope/" and b"deliberate failure" in post.body)
    events = [item for item in envelope_items(posts[0].body) if item.get("exception")]
    assert events, posts[0].body[:2000]
    event = events[0]
    (exception,) = [value for value in event["exception"]["values"] if value["type"] == "RuntimeError"]
    assert exception["value"] == "the test's deliberate failure"
    assert event["request"]["url"].endswith("/fails-for-the-test")
    assert "sentry_key=publickey" in posts[0].headers.get("X-Sentry-Auth", "")
    # Personal data stays home: no query string with an address, no cookies, no local variables.
    assert b"reader@example.com" not in posts[0].body
    assert all("vars" not in frame for frame in exception["stacktrace"]["frames"])


def test_without_a_dsn_nothing_is_reported(tmp_path, sink):
    result = run_python(FAILING_REQUEST, **env(tmp_path))
    assert result.stdout.split() == ["500", "False"]
    assert sink.posted == []
