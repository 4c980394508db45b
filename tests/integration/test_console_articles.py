"""The console's article pages through the real forms, on SQLite and PostgreSQL: the list, hiding
and unhiding, "fetch feeds now" (queued on a real Redis broker, run by the worker's service, with
real feeds on loopback; with the broker down; with none configured); roles and CSRF."""

from __future__ import annotations

import base64
import json
import re
from datetime import timedelta
from html import unescape

import pytest
from sqlalchemy import func, select

from newsletter.extensions import db
from newsletter.models import Article, AuditEvent, FeedFetchRun, FetchRunStatus
from newsletter.queue import BULK_QUEUE, FETCH_FEEDS_NOW
from newsletter.services import digests, fetch_runs
from tests.support.console import ConsoleForms, audit_trail, create_operators, flashes, logged_in

BROKER_DB = 2  # a database of the run's own redis-server no other test uses


# --- helpers ---------------------------------------------------------------------------------------


post = ConsoleForms("/console/articles/").post


def listed_titles(response) -> list[str]:
    return [unescape(title) for title in re.findall(r'<a href="[^"]+" target="_blank" rel="noopener noreferrer">'
                                                    r'([^<]+)</a>', response.get_data(as_text=True))]


def add_article(clock, title, hours_ago=0, published=True) -> int:
    when = clock() - timedelta(hours=hours_ago)
    url = f"https://news.example.org/a/{title.lower().replace(' ', '-')}"
    article = Article(key=url, url=url, title=title, summary_html="", published_at=when if published else None,
                      created_at=when, updated_at=when, hidden=False, source="https://news.example.org/feed")
    db.session.add(article)
    db.session.commit()
    return article.id


def audit_actions() -> list[tuple[str, str | None]]:
    return audit_trail("article")


@pytest.fixture
def people(app, clock):
    with app.app_context():
        create_operators(clock, ("viewer", "editor"))


@pytest.fixture
def editor(app, people):
    return logged_in(app, "editor")


@pytest.fixture
def viewer(app, people):
    return logged_in(app, "viewer")


class Broker:
    """A Redis of the test run's own as the broker: what the web enqueued stays there, unread."""

    def __init__(self, client):
        self.client = client

    def queued(self) -> list[tuple[str, tuple]]:
        messages = [json.loads(raw) for raw in self.client.lrange(BULK_QUEUE, 0, -1)]
        return [(m["headers"]["task"], tuple(json.loads(base64.b64decode(m["body"]))[0])) for m in messages]


@pytest.fixture
def broker(app, redis_server):
    client = redis_server.client(BROKER_DB)
    client.flushdb()
    app.extensions["celery"].conf.broker_url = redis_server.url(BROKER_DB)
    yield Broker(client)
    client.flushdb()
    client.close()


def fetch_status(response) -> str:
    return re.search(r'id="fetch-status" data-status="([a-z_]+)"', response.get_data(as_text=True)).group(1)


# --- the list --------------------------------------------------------------------------------------


def test_list_is_newest_first_and_paginated_and_viewers_only_read(app, viewer, clock):
    with app.app_context():
        for n in range(55):
            add_article(clock, f"Story {n:02d}", hours_ago=n + 1)
        add_article(clock, "Added just now, no date", published=False)
        add_article(clock, "Old but added last", hours_ago=100)

    first = viewer.get("/console/articles/")
    assert first.status_code == 200
    titles = listed_titles(first)
    assert titles[:3] == ["Added just now, no date", "Story 00", "Story 01"]  # published, else added
    assert len(titles) == 50
    second = viewer.get("/console/articles/?page=2")
    assert listed_titles(second) == [f"Story {n:02d}" for n in range(49, 55)] + ["Old but added last"]
    assert "Page 2 of 2" in second.get_data(as_text=True)
    html = first.get_data(as_text=True)
    assert "57 articles, 0 hidden" in html
    assert "Fetch feeds now" not in html and ">Hide<" not in html  # editors only
    for page in ("0", "-1", "x", "99999999", "%C2%B2"):
        assert viewer.get(f"/console/articles/?page={page}").status_code == 200


# --- hide and unhide ---------------------------------------------------------------------------------


def test_editor_hides_and_unhides_an_article_from_digests(app, editor, clock):
    with app.app_context():
        article_id = add_article(clock, "Takedown me", hours_ago=1)
        add_article(clock, "Keep me", hours_ago=2)

    response = post(editor, f"/console/articles/{article_id}/hide", {"page": "1"})
    assert response.status_code == 302
    assert response.headers["Location"] == "/console/articles/"
    page = editor.get(response.headers["Location"])
    assert "“Takedown me” is hidden: digests leave it out from now on." in flashes(page)
    assert '<tr class="hidden-article">' in page.get_data(as_text=True)
    assert ">Unhide<" in page.get_data(as_text=True)
    with app.app_context():
        assert db.session.get(Article, article_id).hidden is True
        assert [a.title for a in digests.new_articles()] == ["Keep me"]

    post(editor, f"/console/articles/{article_id}/hide")  # again: nothing changes, nothing audited twice
    response = post(editor, f"/console/articles/{article_id}/unhide", {"page": "2"}, follow_redirects=True)
    assert "“Takedown me” can go into digests again." in flashes(response)
    with app.app_context():
        assert db.session.get(Article, article_id).hidden is False
        assert [a.title for a in digests.new_articles()] == ["Takedown me", "Keep me"]
        target = f"article:{article_id}"
        assert audit_actions() == [("article.hide", target), ("article.unhide", target)]
    assert post(editor, "/console/articles/999999/hide").status_code == 404


# --- fetch now ----------------------------------------------------------------------------------------


def test_fetch_now_with_no_feeds_configured_says_so_and_changes_nothing(app, editor):
    app.config["FEED_URLS"] = []
    response = post(editor, "/console/articles/fetch")
    assert response.status_code == 302
    [message] = flashes(editor.get(response.headers["Location"]))
    assert message.startswith("No feeds are configured, so there is nothing to fetch: set FEED_URLS")
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Article)) == 0
        assert audit_actions() == []


def test_fetch_now_fetches_every_configured_feed_and_reports_each(app, editor, feed_host, broker, clock):
    good = feed_host.serve("/blog.rss", "blog.rss")
    missing = feed_host.url("/gone.rss")
    app.config["FEED_URLS"] = [good, missing]

    response = post(editor, "/console/articles/fetch")
    assert response.status_code == 303  # the request only queues the fetch: no web worker waits on a feed
    run_page = response.headers["Location"]
    [(task, (run_id,))] = broker.queued()
    assert (task, run_page) == (FETCH_FEEDS_NOW, f"/console/articles/fetch/{run_id}")
    waiting = editor.get(run_page)
    assert fetch_status(waiting) == "queued"
    assert "Fetching… waiting for a worker to take the 2 feeds." in waiting.get_data(as_text=True)
    assert '<meta http-equiv="refresh" content="2">' in waiting.get_data(as_text=True)  # no script: CSP
    assert feed_host.requests == []

    with app.app_context():  # what the worker's fetch_feeds_now task runs
        assert fetch_runs.run_fetch(run_id, clock) is FetchRunStatus.DONE
    response = editor.get(run_page)
    assert fetch_status(response) == "done"
    assert "http-equiv" not in response.get_data(as_text=True)
    lines = [unescape(line) for line in re.findall(r'<li class="(?:ok|failed)">(.*?)</li>',
                                                   response.get_data(as_text=True), re.S)]
    assert lines == [f"feed {good}: 3 new, 0 updated, 0 unchanged", f"feed {missing}: failed: HTTP 404 Not Found"]
    assert '<li class="failed">' in response.get_data(as_text=True)
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Article)) == 3
        [event] = db.session.scalars(select(AuditEvent).where(AuditEvent.action == "articles.fetch")).all()
        assert event.operator.email == "editor@example.org"
        assert event.detail == '{"feeds": 2, "failed": 1, "created": 3, "updated": 0}'
        assert fetch_runs.run_fetch(run_id, clock) is None  # a redelivered message fetches nothing again
    assert len(feed_host.seen("/blog.rss")) == 1
    assert len(listed_titles(editor.get("/console/articles/"))) == 3


def test_fetch_now_with_the_broker_down_says_nothing_was_fetched(app, editor, feed_host, clock):
    app.config["FEED_URLS"] = [feed_host.serve("/blog.rss", "blog.rss")]  # base_config's broker is down
    response = post(editor, "/console/articles/fetch", follow_redirects=True)
    assert fetch_status(response) == "not_queued"
    text = re.sub(r"\s+", " ", response.get_data(as_text=True))
    assert ("Nothing was fetched: the task queue (the broker of CELERY_BROKER_URL or REDIS_URL) could not be "
            "reached") in text
    assert "http-equiv" not in text
    with app.app_context():
        run = db.session.scalar(select(FeedFetchRun))
        assert run.status is FetchRunStatus.NOT_QUEUED
        assert fetch_runs.run_fetch(run.id, clock) is None  # a message that got through after all changes nothing
        assert db.session.scalar(select(func.count()).select_from(Article)) == 0
    assert feed_host.requests == []


def test_a_fetch_no_worker_takes_stops_waiting_and_says_why(app, editor, feed_host, broker, clock):
    app.config["FEED_URLS"] = [feed_host.serve("/blog.rss", "blog.rss")]
    run_page = post(editor, "/console/articles/fetch").headers["Location"]
    clock.advance(minutes=14)
    assert fetch_status(editor.get(run_page)) == "queued"
    clock.advance(minutes=2)
    page = editor.get(run_page)
    assert fetch_status(page) == "stale"
    text = re.sub(r"\s+", " ", page.get_data(as_text=True))
    assert "has still not been taken by a worker: no worker may be running" in text
    assert "http-equiv" not in text
    assert editor.get("/console/articles/fetch/999999").status_code == 404


# --- roles and CSRF ----------------------------------------------------------------------------------


def test_viewers_cannot_fetch_hide_or_unhide(app, viewer, clock):
    with app.app_context():
        article_id = add_article(clock, "Stay visible")
    for path in ("/console/articles/fetch", f"/console/articles/{article_id}/hide",
                 f"/console/articles/{article_id}/unhide"):
        assert post(viewer, path).status_code == 403, path
    with app.app_context():
        assert db.session.get(Article, article_id).hidden is False
        assert audit_actions() == []


def test_every_form_without_the_csrf_token_is_refused_and_changes_nothing(app, editor, clock):
    app.config["FEED_URLS"] = []
    with app.app_context():
        article_id = add_article(clock, "Stay visible")
    for path in ("/console/articles/fetch", f"/console/articles/{article_id}/hide",
                 f"/console/articles/{article_id}/unhide"):
        response = editor.post(path, data={"page": "1"})
        assert response.status_code == 400, path
        assert "security token" in response.get_data(as_text=True)
    with app.app_context():
        assert db.session.get(Article, article_id).hidden is False
        assert audit_actions() == []
