"""`flask digest create | preview | test-send`, on SQLite and PostgreSQL, with a real SMTP server."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from email import policy
from email.parser import BytesParser

import pytest
from sqlalchemy import func, select

from newsletter import tokens
from newsletter.extensions import db
from newsletter.models import Article, Digest, DigestArticle, DigestStatus, Subscriber, SubscriberStatus
from newsletter.services import digests
from tests.support.services import free_port

PARSE = BytesParser(policy=policy.default).parsebytes
BULK_HEADERS = ("From", "To", "Subject", "Date", "Message-ID", "List-Id", "List-Unsubscribe",
                "List-Unsubscribe-Post", "Feedback-ID", "Precedence", "MIME-Version")


def add_article(clock, title, hours_ago=0, published=True, hidden=False, **extra) -> int:
    when = clock() - timedelta(hours=hours_ago)
    article = Article(
        key=f"https://news.example.org/a/{title}", url=f"https://news.example.org/a/{title.replace(' ', '-')}",
        title=title, summary_html=f"<p>About {title}.</p>", author="Jane Reporter",
        image_url="https://news.example.org/img/1.jpg", published_at=when if published else None,
        created_at=when, updated_at=when, hidden=hidden, **extra,
    )
    db.session.add(article)
    db.session.commit()
    return article.id


def add_digest(clock, article_ids, status) -> int:
    digest = Digest(subject="Earlier", status=status, created_at=clock())
    digest.items = [DigestArticle(article_id=article_id, position=i) for i, article_id in enumerate(article_ids)]
    db.session.add(digest)
    db.session.commit()
    return digest.id


def titles(digest_id) -> list[str]:
    return [article.title for article in db.session.get(Digest, digest_id).articles]


def create(runner, *args) -> dict:
    result = runner.invoke(args=["digest", "create", "--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


@pytest.fixture
def draft(app, clock) -> int:
    with app.app_context():
        add_article(clock, "Newest story", hours_ago=1)
        add_article(clock, "Older story", hours_ago=5)
        return digests.create_digest(clock()).id


# --- create ----------------------------------------------------------------------------------


def test_create_takes_only_articles_no_sent_digest_carried(app, runner, clock):
    with app.app_context():
        sent = [add_article(clock, f"sent {status.value}", hours_ago=1) for status in
                (DigestStatus.SENDING, DigestStatus.PAUSED, DigestStatus.DONE)]
        for article_id, status in zip(sent, (DigestStatus.SENDING, DigestStatus.PAUSED, DigestStatus.DONE)):
            add_digest(clock, [article_id], status)
        in_draft = add_article(clock, "in a draft", hours_ago=2)
        add_digest(clock, [in_draft], DigestStatus.DRAFT)
        cancelled = add_article(clock, "in a cancelled digest", hours_ago=3)
        add_digest(clock, [cancelled], DigestStatus.CANCELLED)
        add_article(clock, "hidden", hours_ago=1, hidden=True)
        add_article(clock, "fresh", hours_ago=4)

    output = create(runner)
    assert output["articles"] == 3
    with app.app_context():
        assert titles(output["id"]) == ["in a draft", "in a cancelled digest", "fresh"]
        assert db.session.get(Digest, output["id"]).status is DigestStatus.DRAFT


def test_newest_first_by_publication_falling_back_to_creation(app, runner, clock):
    with app.app_context():
        add_article(clock, "published two hours ago", hours_ago=2)
        add_article(clock, "undated, added an hour ago", hours_ago=1, published=False)
        add_article(clock, "published three hours ago", hours_ago=3)
        article_id = add_article(clock, "published last year, added now", hours_ago=0)
        db.session.get(Article, article_id).published_at = clock() - timedelta(days=365)
        db.session.commit()

    output = create(runner)
    with app.app_context():
        assert titles(output["id"]) == ["undated, added an hour ago", "published two hours ago",
                                        "published three hours ago", "published last year, added now"]


def test_json_output_and_default_subject(app, runner, clock):
    with app.app_context():
        add_article(clock, "Older", hours_ago=2)
        add_article(clock, "The big one", hours_ago=1)
    result = runner.invoke(args=["digest", "create", "--json"])
    output = json.loads(result.output)
    assert set(output) == {"id", "articles", "subject"}
    assert output["articles"] == 2
    assert output["subject"] == "Our latest news: The big one and 1 more"
    with app.app_context():
        assert db.session.get(Digest, output["id"]).subject == output["subject"]


def test_subject_option_and_plain_output(app, runner, clock):
    with app.app_context():
        add_article(clock, "Only one")
    result = runner.invoke(args=["digest", "create", "--subject", "Weekly ☕ news", "--intro", "Hello all"])
    assert result.exit_code == 0
    assert re.fullmatch(r"Created draft digest \d+ with 1 article: Weekly ☕ news\n", result.output)
    with app.app_context():
        digest = db.session.scalars(select(Digest)).one()
        assert (digest.subject, digest.intro) == ("Weekly ☕ news", "Hello all")


def test_subject_with_a_line_break_is_refused(app, runner, clock):
    with app.app_context():
        add_article(clock, "Only one")
    result = runner.invoke(args=["digest", "create", "--subject", "Hi\r\nBcc: x@y"])
    assert result.exit_code != 0
    assert "Line breaks" in result.output
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Digest)) == 0


def test_nothing_new_creates_nothing(app, runner, clock):
    with app.app_context():
        add_digest(clock, [add_article(clock, "already sent")], DigestStatus.DONE)
    result = runner.invoke(args=["digest", "create"])
    assert result.exit_code == 0
    assert result.output == "No new articles since the last digest; nothing created.\n"
    assert create(runner) == {"id": None, "articles": 0, "subject": None}
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Digest)) == 1
        assert digests.create_digest(clock()) is None


def test_since_takes_what_came_since_even_if_sent_before(app, runner, clock):
    with app.app_context():
        add_digest(clock, [add_article(clock, "sent, this morning", hours_ago=3)], DigestStatus.DONE)
        add_article(clock, "new, two days ago", hours_ago=48)
        add_article(clock, "new, just now", hours_ago=0)
        add_article(clock, "undated, added an hour ago", hours_ago=1, published=False)
        add_article(clock, "hidden", hours_ago=0, hidden=True)
    since = (clock() - timedelta(hours=12)).isoformat()
    output = create(runner, "--since", since)
    with app.app_context():
        assert titles(output["id"]) == ["new, just now", "undated, added an hour ago", "sent, this morning"]
    day = (clock() - timedelta(days=3)).date().isoformat()  # a date alone: midnight, DIGEST_TIMEZONE
    assert create(runner, "--since", day)["articles"] == 4


def test_since_must_be_iso_8601(app, runner, clock):
    result = runner.invoke(args=["digest", "create", "--since", "last tuesday"])
    assert result.exit_code == 2
    assert "ISO 8601" in result.output


def test_a_digest_carries_at_most_max_articles_newest_first(app, runner, clock):
    with app.app_context():
        for i in range(digests.MAX_ARTICLES + 2):
            add_article(clock, f"story {i:02d}", hours_ago=i)
    result = runner.invoke(args=["digest", "create"])
    assert f"with {digests.MAX_ARTICLES} articles" in result.output
    assert "2 older new articles wait for the next digest" in result.output
    with app.app_context():
        (digest,) = db.session.scalars(select(Digest)).all()
        assert titles(digest.id)[0] == "story 00"
        assert len(digest.items) == digests.MAX_ARTICLES


# --- preview ---------------------------------------------------------------------------------


def test_preview_writes_the_html_the_text_and_the_whole_message(app, runner, draft, tmp_path, clock):
    out = tmp_path / "preview"
    result = runner.invoke(args=["digest", "preview", str(draft), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["digest.eml", "digest.html", "digest.txt"]

    message = PARSE((out / "digest.eml").read_bytes())
    for name in BULK_HEADERS:
        assert message[name], name
    assert message["To"].addresses[0].addr_spec == "reader@example.com"
    assert message["Precedence"] == "bulk"
    assert message["Feedback-ID"] == f"digest-{draft}:newsletter:news.example.org"
    assert message["X-Newsletter-Test"] is None
    assert [p.get_content_type() for p in message.walk()] == ["multipart/alternative", "text/plain", "text/html"]

    page = message.get_body(("html",)).get_content()
    text = message.get_body(("plain",)).get_content()
    assert page.replace("\r\n", "\n") == (out / "digest.html").read_text(encoding="utf-8")
    assert text.replace("\r\n", "\n") == (out / "digest.txt").read_text(encoding="utf-8")
    assert "<style" not in page.lower() and "<script" not in page.lower()
    links = re.findall(r'(?:href|src)="([^"]*)"', page)
    assert links and all(link.startswith("https://news.example.org/") for link in links)
    assert "https://news.example.org/a/Newest-story" in links
    assert page.index("Newest story") < page.index("Older story")
    assert "Hello Sample Reader," in page and "Hello Sample Reader," in text

    unsubscribe = re.search(r"https://news\.example\.org/unsubscribe/(\S+)", text).group(1)
    with app.app_context():
        assert tokens.read(tokens.UNSUBSCRIBE, unsubscribe, clock()) == {"s": 0}


def test_preview_of_an_unknown_digest_says_so(runner, tmp_path):
    result = runner.invoke(args=["digest", "preview", "999", "--out", str(tmp_path)])
    assert result.exit_code == 1
    assert "No digest with id 999." in result.output


# --- test-send -------------------------------------------------------------------------------


def test_test_send_delivers_a_marked_copy_to_any_address(app, runner, draft, smtp):
    result = runner.invoke(args=["digest", "test-send", str(draft), "--to", "Editor@Example.com"])
    assert result.exit_code == 0, result.output
    (received,) = smtp.wait_for("editor@example.com")
    assert received.sender == "news@news.example.org"
    message = received.message
    assert message["Subject"] == "[TEST] Our latest news: Newest story and 1 more"
    assert message["X-Newsletter-Test"] == "yes"
    for name in BULK_HEADERS:
        assert message[name], name
    assert message["To"].addresses[0].addr_spec == "editor@example.com"
    assert "Newest story" in message.get_body(("html",)).get_content()


def test_test_send_to_a_subscriber_uses_their_name_and_link(app, runner, draft, smtp, clock):
    with app.app_context():
        subscriber = Subscriber(email="ann@example.com", name="Ann", status=SubscriberStatus.CONFIRMED,
                                created_at=clock())
        db.session.add(subscriber)
        db.session.commit()
        subscriber_id = subscriber.id
    assert runner.invoke(args=["digest", "test-send", str(draft), "--to", "ann@example.com"]).exit_code == 0
    text = smtp.wait_for("ann@example.com")[0].message.get_body(("plain",)).get_content()
    assert "Hello Ann," in text
    token = re.search(r"/unsubscribe/(\S+)", text).group(1)
    with app.app_context():
        assert tokens.read(tokens.UNSUBSCRIBE, token, clock()) == {"s": subscriber_id}


@pytest.mark.parametrize("args, message", [
    (["999", "--to", "editor@example.com"], "No digest with id 999."),
    (["DRAFT", "--to", "not an address"], "not valid"),
    (["DRAFT", "--to", "a@b.example\r\nBcc: x@y"], "Line breaks"),
])
def test_test_send_refuses_bad_input(runner, draft, smtp, args, message):
    args = [str(draft) if a == "DRAFT" else a for a in args]
    result = runner.invoke(args=["digest", "test-send", *args])
    assert result.exit_code == 1
    assert message in result.output
    assert smtp.received == []


def test_test_send_reports_the_relay_refusal(runner, draft, smtp):
    smtp.plan.rcpt["editor@example.com"] = ["550 5.7.1 Relaying denied"]
    result = runner.invoke(args=["digest", "test-send", str(draft), "--to", "editor@example.com"])
    assert result.exit_code == 1
    assert "550" in result.output and "Relaying denied" in result.output


def test_test_send_reports_a_relay_that_is_down(app, runner, draft):
    port = free_port()  # closed again: nothing listens there
    app.config["SMTP_URL"] = f"smtp://127.0.0.1:{port}"
    result = runner.invoke(args=["digest", "test-send", str(draft), "--to", "editor@example.com"])
    assert result.exit_code == 1
    assert "no relay reachable" in result.output


def test_service_returns_none_and_writes_nothing_when_nothing_is_new(app, clock):
    with app.app_context():
        assert digests.new_articles() == []
        assert digests.create_digest(datetime(2026, 1, 1, tzinfo=timezone.utc)) is None
        assert db.session.scalar(select(func.count()).select_from(Digest)) == 0


def test_test_send_is_dkim_signed_by_both_keys(app, runner, draft, smtp, dkim_keys):
    app.config.update(dkim_keys.settings())
    result = runner.invoke(args=["digest", "test-send", str(draft), "--to", "editor@example.com"])
    assert result.exit_code == 0, result.output
    (received,) = smtp.to("editor@example.com")
    assert dkim_keys.verified(received.data) == ["rsa-sha256", "ed25519-sha256"]
