"""Articles in: feeds fetched from a real HTTP server on loopback, files, and the token-protected API."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone

import pytest
from sqlalchemy import func, select

from newsletter.extensions import db
from newsletter.models import Article, FeedState
from newsletter.services import articles, feeds
from newsletter.services.articles import canonical_url
from tests.support.feed_server import ATOM, FIXTURES
from tests.support.services import free_port

TOKEN = "test-api-token-0123456789"

# What no sanitised summary may contain, whatever the feed or the API sent.
DANGEROUS = ("<script", "alert(", "onclick", "onmouseover", "onerror", "<form", "<input", "<button", "<iframe",
             "javascript:", "style=", "target=", "evil.example")


def fetch(runner, *urls):
    return runner.invoke(args=["articles", "fetch", *urls])


def all_articles() -> dict[str, Article]:
    return {article.key: article for article in db.session.scalars(select(Article))}


def count(model) -> int:
    return db.session.scalar(select(func.count()).select_from(model))


# --- Feeds ----------------------------------------------------------------------------------------

def test_rss_and_atom_feeds_fetched_twice_keep_one_row_per_article(app, runner, feed_host):
    blog = feed_host.serve("/feed/", "blog.rss")
    news = feed_host.serve("/news.atom", "news.atom", content_type=ATOM)

    first = fetch(runner, blog, news)
    assert first.exit_code == 0, first.output
    assert f"feed {blog}: 3 new, 0 updated, 0 unchanged\n" in first.output
    assert f"feed {news}: 3 new, 0 updated, 0 unchanged\n" in first.output

    second = fetch(runner, blog, news)  # no validators: the server sends everything again
    assert second.exit_code == 0, second.output
    assert f"feed {blog}: 0 new, 0 updated, 3 unchanged\n" in second.output
    assert f"feed {news}: 0 new, 0 updated, 3 unchanged\n" in second.output
    with app.app_context():
        assert count(Article) == 6
        assert set(all_articles()) == {
            "https://blog.example.org/?p=1012",  # guid
            "https://blog.example.org/2026/10/compost-myths/",  # no guid: canonical link
            "https://blog.example.org/2026/10/podcast-12/",
            "tag:labs.example.com,2026:news/release-4-2",
            "tag:labs.example.com,2026:news/meet-dana",
            "urn:uuid:60a76c80-d399-11d9-b93C-0003939e0af6",
        }
        assert {a.source for a in all_articles().values()} == {blog, news}


def test_second_fetch_is_conditional_and_a_304_imports_nothing(app, runner, feed_host, clock):
    etag, modified = '"v1-5f2a"', "Sun, 01 Nov 2026 18:04:11 GMT"
    blog = feed_host.serve("/feed/", "blog.rss", etag=etag, last_modified=modified)
    assert fetch(runner, blog).exit_code == 0
    with app.app_context():
        state = db.session.scalar(select(FeedState).where(FeedState.url == blog))
        assert (state.etag, state.last_modified, state.last_error) == (etag, modified, None)

    clock.advance(minutes=15)
    result = fetch(runner, blog)
    assert result.exit_code == 0, result.output
    assert result.output == f"feed {blog}: not modified since the last fetch; nothing imported\n"
    first_request, second_request = feed_host.seen("/feed/")
    assert "If-None-Match" not in first_request
    assert second_request["If-None-Match"] == etag
    assert second_request["If-Modified-Since"] == modified
    with app.app_context():
        assert count(Article) == 3
        state = db.session.scalar(select(FeedState).where(FeedState.url == blog))
        assert (state.fetched_at, state.etag, state.last_modified) == (clock(), etag, modified)


def test_a_changed_entry_updates_its_row_and_leaves_the_others(app, runner, feed_host, clock):
    blog = feed_host.serve("/feed/", "blog.rss", etag='"v1"')
    assert fetch(runner, blog).exit_code == 0
    created = clock()

    clock.advance(hours=2)
    changed = (FIXTURES / "blog.rss").read_bytes().replace(b"Podcast #12: seed swaps", b"Podcast #12: seed swaps (with transcript)")
    feed_host.serve("/feed/", body=changed, etag='"v2"')
    result = fetch(runner, blog)
    assert result.output == f"feed {blog}: 0 new, 1 updated, 2 unchanged\n"
    assert feed_host.seen("/feed/")[-1]["If-None-Match"] == '"v1"'
    with app.app_context():
        rows = all_articles()
        podcast = rows["https://blog.example.org/2026/10/podcast-12/"]
        assert podcast.title == "Podcast #12: seed swaps (with transcript)"
        assert (podcast.created_at, podcast.updated_at) == (created, clock())
        assert rows["https://blog.example.org/?p=1012"].updated_at == created
        assert db.session.scalar(select(FeedState.etag).where(FeedState.url == blog)) == '"v2"'


def test_a_feed_with_broken_entries_imports_the_rest_and_names_the_broken_ones(app, runner, feed_host):
    url = feed_host.serve("/notices.rss", "blog-broken.rss")
    result = fetch(runner, url)
    assert result.exit_code == 0, result.output
    assert result.output == (
        f"feed {url}: 2 new, 0 updated, 0 unchanged; 3 bad entries: "
        "entry 2 ('Draft: bonfire night'): no link; "
        "entry 3 ('Win a prize!'): link is not an absolute http(s) URL: 'javascript:alert(document.cookie)'; "
        "entry 4 (parish-notice-80): no title\n"
    )
    with app.app_context():
        assert set(all_articles()) == {"https://parish.example.net/notices/mill-lane-closure",
                                       "https://parish.example.net/notices/allotments"}


def test_failing_feeds_are_reported_and_do_not_stop_the_others(app, runner, feed_host):
    app.config["FEED_TIMEOUT"] = 0.5
    broken = feed_host.serve("/broken.rss", status=500)
    slow = feed_host.serve("/slow.rss", hang=True)
    page = feed_host.serve("/index.html", body=b"<!doctype html><html><body><h1>Welcome</h1></body></html>",
                           content_type="text/html; charset=utf-8")
    missing = feed_host.url("/gone.rss")
    refused = f"http://127.0.0.1:{free_port()}/feed/"
    good = feed_host.serve("/feed/", "blog.rss")

    started = time.monotonic()
    result = fetch(runner, broken, slow, page, missing, refused, "file:///etc/passwd", good)
    assert time.monotonic() - started < 5  # the hanging feed cost about FEED_TIMEOUT, not forever

    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[0] == f"feed {broken}: failed: HTTP 500 Internal Server Error"
    # No HTTP answer, whether silent or closed: one text, that tells nothing about the port (issue 12).
    assert lines[1] == f"feed {slow}: failed: the feed could not be fetched"
    assert lines[2].startswith(f"feed {page}: failed: not an RSS or Atom feed")
    assert lines[3] == f"feed {missing}: failed: HTTP 404 Not Found"
    assert lines[4] == f"feed {refused}: failed: the feed could not be fetched"
    assert lines[5] == "feed file:///etc/passwd: failed: feed URL is not an absolute http(s) URL: 'file:///etc/passwd'"
    assert lines[6] == f"feed {good}: 3 new, 0 updated, 0 unchanged"
    with app.app_context():
        assert count(Article) == 3
        errors = dict(db.session.execute(select(FeedState.url, FeedState.last_error)).all())
        assert errors[broken] == "HTTP 500 Internal Server Error"
        assert errors[slow] == "the feed could not be fetched"
        assert errors[refused] == "the feed could not be fetched"
        assert errors[page].startswith("not an RSS or Atom feed")
        assert errors[good] is None
        assert "file:///etc/passwd" not in errors


def test_a_failure_keeps_the_validators_and_the_next_good_fetch_clears_it(app, runner, feed_host, clock):
    blog = feed_host.serve("/feed/", "blog.rss", etag='"v1"')
    fetch(runner, blog)
    fetched_at = clock()

    clock.advance(minutes=15)
    feed_host.serve("/feed/", status=503)
    assert fetch(runner, blog).exit_code == 1
    with app.app_context():
        state = db.session.scalar(select(FeedState).where(FeedState.url == blog))
        assert (state.etag, state.fetched_at, state.last_error) == ('"v1"', fetched_at, "HTTP 503 Service Unavailable")

    clock.advance(minutes=15)
    feed_host.serve("/feed/", "blog.rss", etag='"v1"')
    result = fetch(runner, blog)
    assert result.exit_code == 0 and "not modified" in result.output
    with app.app_context():
        state = db.session.scalar(select(FeedState).where(FeedState.url == blog))
        assert (state.etag, state.fetched_at, state.last_error) == ('"v1"', clock(), None)


def test_fetch_without_urls_fetches_feed_urls_and_says_when_there_are_none(app, runner, feed_host, clock):
    result = fetch(runner)
    assert result.exit_code == 1 and "No feeds to fetch: give their URLs or set FEED_URLS." in result.output

    app.config["FEED_URLS"] = [feed_host.serve("/feed/", "blog.rss"),
                               feed_host.serve("/news.atom", "news.atom", content_type=ATOM)]
    result = fetch(runner)
    assert result.exit_code == 0, result.output
    assert len(result.output.splitlines()) == 2

    # What beat's fetch_feeds task runs.
    with app.app_context():
        reports = feeds.fetch_configured(clock())
        assert [(r.url, r.failed, r.articles.unchanged) for r in reports] == [(u, False, 3) for u in app.config["FEED_URLS"]]


def test_summaries_from_feeds_are_sanitised(app, runner, feed_host):
    fetch(runner, feed_host.serve("/feed/", "blog.rss"), feed_host.serve("/news.atom", "news.atom", content_type=ATOM))
    with app.app_context():
        rows = all_articles()
        for article in rows.values():
            for needle in DANGEROUS:
                assert needle not in article.summary_html, (article.key, needle)
        spring = rows["https://blog.example.org/?p=1012"].summary_html
        assert "<p>Five beds, three failures and <strong>one surprise</strong>.</p>" in spring
        assert '<a href="https://blog.example.org/beds/" rel="noopener noreferrer">see the beds</a>' in spring
        assert '<a rel="noopener noreferrer">Click me</a>' in spring  # the javascript: URL is gone, the text stays
        assert '<img alt="The beds" src="https://blog.example.org/wp-content/uploads/beds.jpg">' in spring
        # A relative link in the feed is made absolute.
        assert 'href="https://blog.example.org/2026/10/compost-myths/"' in rows["https://blog.example.org/2026/10/compost-myths/"].summary_html
        # A plain-text Atom summary stays text: its "<now>" is not a tag.
        assert rows["urn:uuid:60a76c80-d399-11d9-b93C-0003939e0af6"].summary_html == "Upgrade to 4.1.3 &lt;now&gt;."


def test_titles_are_plain_text_and_images_dates_authors_come_along(app, runner, feed_host):
    fetch(runner, feed_host.serve("/feed/", "blog.rss"), feed_host.serve("/news.atom", "news.atom", content_type=ATOM))
    with app.app_context():
        rows = all_articles()
        spring = rows["https://blog.example.org/?p=1012"]
        assert spring.title == "Spring planting: what worked & what didn’t"
        assert spring.url == "https://blog.example.org/2026/11/spring-planting/"  # utm_* dropped
        assert spring.author == "Ada Green"
        assert spring.image_url == "https://blog.example.org/wp-content/uploads/beds-150x150.jpg"  # media:thumbnail
        assert spring.published_at == datetime(2026, 11, 1, 17, 30, tzinfo=timezone.utc)

        compost = rows["https://blog.example.org/2026/10/compost-myths/"]
        assert compost.title == "Compost myths, debunked"  # escaped <b>, a line break
        assert compost.url == "https://blog.example.org/2026/10/compost-myths/"  # host lowercased, #fragment gone
        assert compost.image_url == "https://cdn.example.org/img/compost.jpg"  # enclosure image/jpeg
        assert compost.published_at == datetime(2026, 10, 29, 7, 0, tzinfo=timezone.utc)  # +0100 in the feed

        podcast = rows["https://blog.example.org/2026/10/podcast-12/"]
        assert podcast.image_url == "https://cdn.example.org/img/podcast-12.png"  # media:content, not the mp3

        release = rows["tag:labs.example.com,2026:news/release-4-2"]
        assert release.title == "Release 4.2 is out"
        assert release.published_at == datetime(2026, 11, 1, 8, 0, tzinfo=timezone.utc)
        assert rows["tag:labs.example.com,2026:news/meet-dana"].published_at == datetime(2026, 10, 20, 9, 0, tzinfo=timezone.utc)
        assert rows["urn:uuid:60a76c80-d399-11d9-b93C-0003939e0af6"].image_url == "https://labs.example.com/img/advisory.jpg"
        for article in rows.values():
            assert "\n" not in article.title and "\r" not in article.title and "<" not in article.title


# --- Files ----------------------------------------------------------------------------------------

def test_json_file_import_reports_bad_elements_by_index_and_imports_the_rest(app, runner, clock):
    path = str(FIXTURES / "articles.json")
    result = runner.invoke(args=["articles", "import", path])
    assert result.exit_code == 0, result.output
    assert result.output == (
        f"{path}: 3 new, 0 updated, 0 unchanged; 4 bad entries: "
        "index 1: no url; "
        "index 3: published_at is not an ISO 8601 date-time: 'last Tuesday'; "
        "index 4: not an object; "
        "index 5: url is not an absolute http(s) URL: 'ftp://files.example.com/minutes.pdf'\n"
    )
    with app.app_context():
        rows = all_articles()
        harbour = rows["https://www.example.com/stories/harbour-reopens?ref=home"]
        assert harbour.url == "https://www.example.com/stories/harbour-reopens?ref=home"
        assert harbour.published_at == datetime(2026, 10, 30, 17, 45, tzinfo=timezone.utc)
        assert harbour.source == "articles.json" and harbour.author == "Sam Patel"
        assert harbour.summary_html == ('<p>The harbour wall is fixed. <a href="https://www.example.com/stories/harbour-reopens#photos" '
                                        'rel="noopener noreferrer">See photos</a>.</p>')
        assert rows["https://www.example.com/stories/market-day"].published_at == datetime(2026, 10, 29, tzinfo=timezone.utc)
        assert rows["https://www.example.com/stories/library-hours"].title == "Library hours Bcc: everyone@example.com"

    again = runner.invoke(args=["articles", "import", path])
    assert again.output.startswith(f"{path}: 0 new, 0 updated, 3 unchanged; 4 bad entries")


def test_feed_file_import_and_unreadable_files(app, runner, tmp_path):
    result = runner.invoke(args=["articles", "import", str(FIXTURES / "news.atom")])
    assert result.exit_code == 0 and result.output.endswith("news.atom: 3 new, 0 updated, 0 unchanged\n")

    all_bad = tmp_path / "bad.json"
    all_bad.write_text(json.dumps([{"title": "no url"}, {"url": "https://example.com/x"}]))
    result = runner.invoke(args=["articles", "import", str(all_bad)])
    assert result.exit_code == 1
    assert result.output.endswith("0 new, 0 updated, 0 unchanged; 2 bad entries: index 0: no url; index 1: no title\n")

    for name, content, message in (("broken.json", "[{\"url\": ", "not valid JSON"),
                                   ("notes.txt", "Meeting notes, not a feed.", "not an RSS or Atom feed")):
        path = tmp_path / name
        path.write_text(content)
        result = runner.invoke(args=["articles", "import", str(path)])
        assert result.exit_code == 1 and message in result.output
    with app.app_context():
        assert count(Article) == 3


# --- API ------------------------------------------------------------------------------------------

def post(client, body, token=TOKEN, **kwargs):
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return client.post("/api/v1/articles", json=body, headers=headers, **kwargs)


def test_api_refuses_missing_and_wrong_tokens(app, client):
    article = {"url": "https://example.com/a", "title": "A"}
    response = post(client, [article])  # no API_TOKEN configured: the site token is no way in
    assert response.status_code == 401

    app.config["API_TOKEN"] = TOKEN
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"},
                    {"Authorization": "Bearer"}, {"Authorization": "Bearer tëst"}):
        response = client.post("/api/v1/articles", json=[article], headers=headers)
        assert response.status_code == 401, headers
        assert "Authentication required" in response.get_json()["error"]
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    with app.app_context():
        assert count(Article) == 0


def test_api_imports_idempotently_and_reports_bad_elements_by_index(app, client, clock):
    app.config["API_TOKEN"] = TOKEN
    batch = [
        {"url": "https://example.com/news/one?utm_campaign=x", "title": "One", "summary": "<p>First</p>",
         "published_at": "2026-11-01T12:00:00Z"},
        {"url": "https://example.com/news/two", "title": "  "},
        {"url": "https://example.com/news/three", "title": "Three", "image_url": "javascript:alert(1)"},
        {"url": "https://example.com/news/four", "title": "Four", "author": 42},
    ]
    response = post(client, batch)
    assert response.status_code == 201
    assert response.get_json() == {"created": 1, "updated": 0, "unchanged": 0, "errors": [
        {"index": 1, "error": "no title"},
        {"index": 2, "error": "image_url is not an absolute http(s) URL: 'javascript:alert(1)'"},
        {"index": 3, "error": "author must be a string"},
    ]}

    # The same article again (its URL spelled differently), and one object on its own.
    same = {**batch[0], "url": "HTTPS://Example.com:443/news/one#top"}
    response = post(client, same)
    assert response.status_code == 200
    assert response.get_json() == {"created": 0, "updated": 0, "unchanged": 1, "errors": []}

    clock.advance(hours=1)
    response = post(client, [{**same, "summary": "<p>First, corrected</p>"},
                             {"url": "https://example.com/news/five", "title": "Five"}])
    assert response.status_code == 201
    assert response.get_json() == {"created": 1, "updated": 1, "unchanged": 0, "errors": []}
    with app.app_context():
        one = all_articles()["https://example.com/news/one"]
        assert (one.summary_html, one.source, one.updated_at) == ("<p>First, corrected</p>", "api", clock())
        assert count(Article) == 2


def test_api_answers_400_when_nothing_is_valid(app, client):
    app.config["API_TOKEN"] = TOKEN
    response = post(client, [{"title": "no url"}, "nope"])
    assert response.status_code == 400
    assert response.get_json() == {"error": "No valid article in the request.", "created": 0, "updated": 0,
                                   "unchanged": 0, "errors": [{"index": 0, "error": "no url"},
                                                              {"index": 1, "error": "not an object"}]}
    assert post(client, []).status_code == 400
    assert post(client, 42).status_code == 400
    response = client.post("/api/v1/articles", data="url=https://example.com",
                           headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 400 and "Send JSON" in response.get_json()["error"]
    with app.app_context():
        assert count(Article) == 0


def test_api_neutralises_html_and_line_breaks_in_titles_and_sanitises_summaries(app, client):
    app.config["API_TOKEN"] = TOKEN
    response = post(client, [{
        "url": "https://example.com/news/xss",
        "title": "<script>alert(1)</script>Breaking:\r\nSubject: spam &amp; <b>more</b>",
        "author": "Eve\r\n<i>Mallory</i>",
        "summary": ('<p style="position:fixed" onclick="alert(1)">Hi <a href="javascript:alert(1)">x</a>'
                    '<a href="https://ok.example/" target="_blank" onmouseover="alert(1)">ok</a></p>'
                    '<form action="https://evil.example/"><input name="pw"><button>Go</button></form>'
                    '<iframe src="https://evil.example/"></iframe><script>alert(1)</script>'
                    '<img src="https://img.example/a.png" onerror="alert(1)" alt="A">'
                    '<a href="mailto:desk@example.com">mail us</a><img src="mailto:x@example.com">'),
    }])
    assert response.status_code == 201, response.get_json()
    with app.app_context():
        article = all_articles()["https://example.com/news/xss"]
        assert article.title == "Breaking: Subject: spam & more"
        assert article.author == "Eve Mallory"
        for needle in DANGEROUS:
            assert needle not in article.summary_html, needle
        assert article.summary_html == (
            '<p>Hi <a rel="noopener noreferrer">x</a><a href="https://ok.example/" rel="noopener noreferrer">ok</a></p>'
            '<img src="https://img.example/a.png" alt="A">'
            '<a href="mailto:desk@example.com" rel="noopener noreferrer">mail us</a><img>'
        )


# --- Identity and races ---------------------------------------------------------------------------

def test_a_concurrent_insert_of_the_same_article_is_settled_by_the_unique_key(app, clock, monkeypatch):
    with app.app_context():
        articles.import_json([{"url": "https://example.com/a", "title": "A"}], "api", clock())
        # Another import committed "a" after this one looked: the first lookup does not see it.
        lookup = articles._existing_by_key
        calls = []
        monkeypatch.setattr(articles, "_existing_by_key", lambda keys: calls.append(keys) or ({} if len(calls) == 1 else lookup(keys)))
        report = articles.import_json([{"url": "https://example.com/a", "title": "A, retitled"},
                                       {"url": "https://example.com/b", "title": "B"}], "api", clock())
        assert len(calls) == 2  # the insert hit the unique key, the import started again
        assert (report.created, report.updated, report.unchanged) == (1, 1, 0)
        db.session.expire_all()
        assert sorted(a.title for a in all_articles().values()) == ["A, retitled", "B"]


def test_the_same_article_twice_in_one_input_is_named_not_imported_twice(app, clock):
    with app.app_context():
        report = articles.import_json([{"url": "https://example.com/a?utm_source=x", "title": "A"},
                                       {"url": "https://example.com/a", "title": "A again"}], "api", clock())
        assert (report.created, report.errors[0].index, report.errors[0].reason) == (1, 1, "the same article as index 0")
        assert count(Article) == 1


@pytest.mark.parametrize(("raw", "canonical"), [
    ("https://Example.COM/Path?b=2&utm_source=x&a=1#frag", "https://example.com/Path?b=2&a=1"),
    ("HTTP://example.com:80", "http://example.com/"),
    ("https://example.com:8443/x?UTM_Medium=y", "https://example.com:8443/x"),
    ("https://example.com/x?q=a%20b&utm_%63ampaign=z", "https://example.com/x?q=a%20b"),
    ("https://[2001:DB8::1]/x", "https://[2001:db8::1]/x"),
])
def test_canonical_url(raw, canonical):
    assert canonical_url(raw) == canonical


@pytest.mark.parametrize("raw", ["/relative", "mailto:a@example.com", "https://user:pw@example.com/", "https://exa mple.com/",
                                 "https://example.com/\r\nX: y", "https://example.com:99999/", "https:///nohost"])
def test_urls_that_are_not_absolute_http_are_refused(raw):
    with pytest.raises(articles.InvalidInput):
        canonical_url(raw)


def test_api_takes_an_editors_own_token_and_refuses_a_viewers(app, client, clock):
    from newsletter.models import AuditEvent
    from newsletter.services import operators

    with app.app_context():
        editor = operators.create_operator("editor@example.org", "editor", "a-long-enough-password", clock())
        viewer = operators.create_operator("viewer@example.org", "viewer", "a-long-enough-password", clock())
        editor_token = operators.create_api_token(editor, "cms", clock())[1]
        viewer_token = operators.create_api_token(viewer, "cms", clock())[1]
        editor_id = editor.id
    article = {"url": "https://example.com/by-editor", "title": "By an editor"}
    assert post(client, [article], token=viewer_token).status_code == 403
    assert post(client, [article], token=editor_token).status_code == 201
    with app.app_context():
        assert count(Article) == 1
        assert db.session.scalar(select(AuditEvent.action).where(AuditEvent.operator_id == editor_id)
                                 .order_by(AuditEvent.id.desc()).limit(1)) == "api.articles.import"
