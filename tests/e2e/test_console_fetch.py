"""The console's "fetch feeds now" with a real Celery worker: two feeds that never answer once
killed the web worker (gunicorn's timeout, a 500); now the request only queues the fetch, the worker
ends it within FEED_TIMEOUT per feed, and the run's page shows each feed's report."""

from __future__ import annotations

import re
import time
from html import unescape

import pytest
from sqlalchemy import select

from newsletter.clock import utcnow
from newsletter.extensions import db
from newsletter.models import FeedFetchRun
from newsletter.services import operators
from tests.support.feed_server import FeedHost
from tests.support.forms import OPERATOR_PASSWORD, form_fields, log_in

from .harness import wait_until

pytestmark = pytest.mark.worker

FEED_TIMEOUT = 1
UNREACHABLE = "the feed could not be fetched"


@pytest.fixture
def feed_host():
    host = FeedHost().start()
    yield host
    host.stop()


def test_fetch_now_is_done_by_a_worker_and_hanging_feeds_cost_it_feed_timeout(harness, feed_host):
    database, broker = harness.sqlite(), harness.redis(15)
    good = feed_host.serve("/blog.rss", "blog.rss")
    hanging = [feed_host.serve(path, hang=True) for path in ("/slow-1.rss", "/slow-2.rss")]
    app = harness.app(database, broker, FEED_URLS=[hanging[0], good, hanging[1]], FEED_ALLOW_PRIVATE=True)
    harness.worker(database, broker, FEED_ALLOW_PRIVATE="1", FEED_TIMEOUT=str(FEED_TIMEOUT))
    with app.app_context():
        operators.create_operator("editor@example.org", "editor", OPERATOR_PASSWORD, utcnow())
    client = app.test_client()
    log_in(client, "editor@example.org")

    token = form_fields(client.get("/console/articles/").get_data(as_text=True))["csrf_token"]
    started = time.monotonic()
    response = client.post("/console/articles/fetch", data={"csrf_token": token})
    assert response.status_code == 303
    assert time.monotonic() - started < 5  # the web request never waits on the feeds

    def finished_page():
        page = client.get(response.headers["Location"]).get_data(as_text=True)
        return page if 'data-status="done"' in page else None

    page = wait_until(finished_page, 30, "the worker to finish the fetch")
    lines = [unescape(line) for line in re.findall(r'<li class="(?:ok|failed)">(.*?)</li>', page, re.S)]
    assert lines == [f"feed {hanging[0]}: failed: {UNREACHABLE}", f"feed {good}: 3 new, 0 updated, 0 unchanged",
                     f"feed {hanging[1]}: failed: {UNREACHABLE}"]
    with app.app_context():
        run = db.session.scalar(select(FeedFetchRun))
        # Each hanging feed cost the worker about FEED_TIMEOUT, not the minutes it would wait.
        assert (run.finished_at - run.started_at).total_seconds() < 2 * FEED_TIMEOUT + 2
    assert "3 articles, 0 hidden" in client.get("/console/articles/").get_data(as_text=True)
