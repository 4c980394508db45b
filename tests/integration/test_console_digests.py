"""The console's digest pages, through the real forms, on SQLite and PostgreSQL, with a real SMTP
server: compose a chosen subset in a chosen order, preview, test-send, send, watch, pause, resume,
cancel, schedule; roles and CSRF on every change."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import select

from newsletter.extensions import db
from newsletter.models import (
    Article,
    Delivery,
    Digest,
    DigestArticle,
    DigestStatus,
    Subscriber,
    SubscriberStatus,
)
from newsletter.services import delivery
from newsletter.services.digests import send_due_scheduled
from tests.support.console import ConsoleForms, audit_trail, create_operators, flashes, logged_in

READERS = [f"reader{i}@example.com" for i in range(4)]


def add_article(clock, title, hours_ago=0, summary=None) -> int:
    when = clock() - timedelta(hours=hours_ago)
    url = f"https://news.example.org/a/{title.lower().replace(' ', '-')}"
    article = Article(key=url, url=url, title=title, summary_html=summary or f"<p>About {title}.</p>",
                      published_at=when, created_at=when, updated_at=when)
    db.session.add(article)
    db.session.commit()
    return article.id


def add_draft(clock, article_ids, subject="This week") -> int:
    digest = Digest(subject=subject, status=DigestStatus.DRAFT, created_at=clock())
    digest.items = [DigestArticle(article_id=article_id, position=i) for i, article_id in enumerate(article_ids)]
    db.session.add(digest)
    db.session.commit()
    return digest.id


post = ConsoleForms("/console/digests/").post


def status_of(app, digest_id) -> DigestStatus:
    with app.app_context():
        return db.session.get(Digest, digest_id).status


def audit_actions(app) -> list[tuple[str, str]]:
    with app.app_context():
        return audit_trail("digest.")


@pytest.fixture
def people(app, clock):
    with app.app_context():
        create_operators(clock, ("viewer", "editor"))
        for email in READERS:
            db.session.add(Subscriber(email=email, status=SubscriberStatus.CONFIRMED, created_at=clock()))
        db.session.add(Subscriber(email="pending@example.com", status=SubscriberStatus.PENDING, created_at=clock()))
        db.session.commit()


@pytest.fixture
def editor(app, people):
    return logged_in(app, "editor")


@pytest.fixture
def viewer(app, people):
    return logged_in(app, "viewer")


@pytest.fixture
def articles(app, clock) -> dict[str, int]:
    with app.app_context():
        return {title: add_article(clock, title, hours_ago=hours)
                for title, hours in (("Newest", 1), ("Middle", 2), ("Oldest", 3))}


@pytest.fixture
def draft(app, clock, articles) -> int:
    with app.app_context():
        return add_draft(clock, [articles["Newest"], articles["Oldest"]])


@pytest.fixture
def mailer():
    instance = delivery.Mailer()
    yield instance
    instance.close()


def send_everything(app, digest_id, clock, mailer) -> None:
    """What the workers would do: every range of the digest, in this process."""
    with app.app_context():
        for first, last in delivery.batch_ranges(digest_id):
            delivery.send_range(digest_id, first, last, clock, mailer)


# --- compose --------------------------------------------------------------------------------------


def test_compose_lists_new_articles_newest_first_all_ticked(editor, articles):
    html = editor.get("/console/digests/new").get_data(as_text=True)
    assert html.index("Newest") < html.index("Middle") < html.index("Oldest")
    assert len(re.findall(r'name="article" value="\d+" id="article-\d+" checked', html)) == 3
    assert 'value="Our latest news: Newest and 2 more"' in html


def test_compose_keeps_exactly_the_chosen_articles_in_the_chosen_order(app, editor, articles):
    response = post(editor, "/console/digests/new", {
        "subject": "Hand-picked", "intro": "Hello.\r\n\r\nTwo stories.",
        "article": [str(articles["Newest"]), str(articles["Oldest"])],  # Middle unticked
        f"position-{articles['Newest']}": "2", f"position-{articles['Middle']}": "1",
        f"position-{articles['Oldest']}": "1",
    })
    assert response.status_code == 302
    with app.app_context():
        digest = db.session.scalars(select(Digest)).one()
        assert response.headers["Location"].endswith(f"/console/digests/{digest.id}")
        assert [a.title for a in digest.articles] == ["Oldest", "Newest"]
        assert [item.position for item in digest.items] == [0, 1]
        assert (digest.subject, digest.intro, digest.status) == ("Hand-picked", "Hello.\n\nTwo stories.",
                                                                 DigestStatus.DRAFT)
    assert audit_actions(app) == [("digest.create", f"digest:{digest.id}")]


def test_compose_with_an_empty_subject_names_the_first_chosen_article(app, editor, articles):
    post(editor, "/console/digests/new", {"subject": "", "article": [str(articles["Middle"])],
                                          f"position-{articles['Middle']}": "1"})
    with app.app_context():
        assert db.session.scalars(select(Digest)).one().subject == "Our latest news: Middle"


@pytest.mark.parametrize("subject", ["Hello\r\nBcc: everyone@example.com", "Hello\nthere", "x" * 201])
def test_compose_refuses_a_subject_with_line_breaks_or_too_long(app, editor, articles, subject):
    response = post(editor, "/console/digests/new", {"subject": subject, "article": [str(articles["Newest"])],
                                                     f"position-{articles['Newest']}": "1"})
    assert response.status_code == 400
    assert flashes(response)[0] in ("Line breaks and control characters are not allowed here.",
                                    "The subject is too long (at most 200 characters).")
    with app.app_context():
        assert db.session.scalars(select(Digest)).all() == []


def test_compose_refuses_no_articles_and_bad_positions(app, editor, articles):
    newest = str(articles["Newest"])
    nothing = post(editor, "/console/digests/new", {"subject": "S"})
    assert nothing.status_code == 400 and flashes(nothing) == ["Choose at least one article."]
    bad = post(editor, "/console/digests/new", {"subject": "S", "article": [newest], f"position-{newest}": "one"})
    assert bad.status_code == 400
    assert flashes(bad) == ["Give each ticked article a whole number as its position ('one' is not one)."]
    assert 'value="S"' in bad.get_data(as_text=True)  # what was typed is kept
    with app.app_context():
        assert db.session.scalars(select(Digest)).all() == []


def test_a_draft_subject_and_intro_can_be_edited_until_it_goes_out(app, editor, draft):
    response = post(editor, f"/console/digests/{draft}/edit", {"subject": "Better subject", "intro": "Hi."},
                    follow_redirects=True)
    assert flashes(response) == ["Subject and introduction saved."]
    refused = post(editor, f"/console/digests/{draft}/edit", {"subject": "Evil\r\nBcc: x@example.com"},
                   follow_redirects=True)
    assert flashes(refused) == ["Line breaks and control characters are not allowed here."]
    post(editor, f"/console/digests/{draft}/send")
    late = post(editor, f"/console/digests/{draft}/edit", {"subject": "Too late"}, follow_redirects=True)
    assert flashes(late) == [f"Digest {draft} is sending; only a draft or a scheduled digest can be changed."]
    with app.app_context():
        digest = db.session.get(Digest, draft)
        assert (digest.subject, digest.intro) == ("Better subject", "Hi.")


# --- preview and test copy ------------------------------------------------------------------------


def test_preview_shows_the_html_in_a_sandboxed_frame_and_the_text(app, clock, viewer):
    with app.app_context():
        bad = add_article(clock, "Scripted", summary='<p>Read <b>this</b>.</p><script>alert("x")</script>')
        digest_id = add_draft(clock, [bad], subject="Preview me")
    page = viewer.get(f"/console/digests/{digest_id}/preview")
    html = page.get_data(as_text=True)
    frame = re.search(r"<iframe [^>]*>", html).group(0)
    assert f'src="/console/digests/{digest_id}/preview.html"' in frame
    assert re.search(r"\ssandbox[\s>]", frame) and "allow-scripts" not in frame
    assert "Read this." in re.search(r'<pre class="mail-text">(.*?)</pre>', html, re.S).group(1)
    page_csp = page.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in page_csp and "unsafe-inline" not in page_csp

    body = viewer.get(f"/console/digests/{digest_id}/preview.html")
    assert body.status_code == 200 and body.mimetype == "text/html"
    email_html = body.get_data(as_text=True)
    assert "Preview me" in email_html and "<b>this</b>" in email_html
    assert "<script" not in email_html.lower()
    assert body.headers["Content-Security-Policy"] == ("default-src 'none'; img-src https: http: data:; "
                                                       "style-src 'unsafe-inline'; frame-ancestors 'self'")
    assert body.headers["X-Frame-Options"] == "SAMEORIGIN"


def test_test_copy_goes_to_the_editor_marked_test(app, smtp, editor, draft):
    response = post(editor, f"/console/digests/{draft}/test-send", follow_redirects=True)
    assert flashes(response) == ["Test copy “[TEST] This week” sent to editor@example.org."]
    assert len(smtp.handler.received) == 1
    message = smtp.handler.received[0].message
    assert message["Subject"].startswith("[TEST]") and message["To"] == "editor@example.org"
    assert status_of(app, draft) is DigestStatus.DRAFT  # a test copy is not a send
    assert audit_actions(app) == [("digest.test_send", f"digest:{draft}")]


def test_test_copy_shows_the_relays_refusal(app, smtp, editor, draft):
    smtp.handler.plan.rcpt["editor@example.org"] = ["550 5.7.1 Relaying denied"]
    response = post(editor, f"/console/digests/{draft}/test-send", follow_redirects=True)
    assert len(flashes(response)) == 1
    assert flashes(response)[0].startswith("The relay did not take the test copy:")
    assert "Relaying denied" in flashes(response)[0]
    assert smtp.handler.received == []


# --- send, watch, control -------------------------------------------------------------------------


def test_send_now_writes_deliveries_and_progress_follows_to_done(app, clock, smtp, editor, viewer, draft, mailer):
    response = post(editor, f"/console/digests/{draft}/send", follow_redirects=True)
    assert flashes(response) == [f"Sending digest {draft} to {len(READERS)} subscribers."]
    with app.app_context():
        assert len(db.session.scalars(select(Delivery).where(Delivery.digest_id == draft)).all()) == len(READERS)
    progress = viewer.get(f"/console/digests/{draft}/progress.json").get_json()
    assert progress["status"] == "sending" and progress["total"] == len(READERS)
    assert (progress["pending"], progress["sent"], progress["finished"]) == (len(READERS), 0, 0)
    assert progress["eta_seconds"] is None  # nothing sent yet: no rate to go by

    clock.advance(seconds=10)
    send_everything(app, draft, clock, mailer)
    assert sorted(r.recipients[0] for r in smtp.handler.received) == sorted(READERS)
    clock.advance(seconds=10)
    progress = viewer.get(f"/console/digests/{draft}/progress.json").get_json()
    assert progress["status"] == "done" and progress["label"] == "Done"
    assert (progress["sent"], progress["finished"], progress["pending"]) == (len(READERS), len(READERS), 0)
    assert progress["rate_per_second"] == pytest.approx(len(READERS) / 20, abs=0.01)  # 4 in the 20 s since start
    assert progress["eta_seconds"] == 0
    page = viewer.get(f"/console/digests/{draft}").get_data(as_text=True)
    assert '<strong data-field="label">Done</strong>' in page
    assert f'<progress max="{len(READERS)}" value="{len(READERS)}"' in page
    assert audit_actions(app) == [("digest.send", f"digest:{draft}")]


def test_progress_page_polls_the_json_from_a_script_file_only(viewer, draft):
    response = viewer.get(f"/console/digests/{draft}")
    html = response.get_data(as_text=True)
    assert f'data-progress-url="/console/digests/{draft}/progress.json"' in html and 'data-interval="1"' in html
    assert re.findall(r"<script[^>]*>", html) == ['<script src="/static/progress.js" defer>']
    assert 'http-equiv="refresh"' not in html
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    assert viewer.get("/static/progress.js").status_code == 200


def test_pause_resume_cancel_and_refused_transitions_change_nothing(app, editor, draft):
    def act(action):
        return flashes(post(editor, f"/console/digests/{draft}/{action}", follow_redirects=True))

    assert act("pause") == [f"Digest {draft} is draft; it must be sending."]
    assert status_of(app, draft) is DigestStatus.DRAFT
    act("send")
    assert act("resume") == [f"Digest {draft} is sending; it must be paused."]
    assert act("pause") == ["Paused: workers stop after the messages in hand."]
    assert status_of(app, draft) is DigestStatus.PAUSED
    assert act("send") == [f"Digest {draft} is paused; only a draft can be sent."]
    assert act("resume") == ["Resumed."]
    assert status_of(app, draft) is DigestStatus.SENDING
    assert act("cancel") == ["Cancelled: nobody else will get this digest."]
    assert status_of(app, draft) is DigestStatus.CANCELLED
    with app.app_context():
        assert {d.status.value for d in db.session.scalars(select(Delivery))} == {"skipped"}
    assert act("resume") == [f"Digest {draft} is cancelled; it must be paused."]
    assert [action for action, _ in audit_actions(app)] == ["digest.send", "digest.pause", "digest.resume",
                                                            "digest.cancel"]


def test_page_shows_only_the_buttons_of_the_current_state(editor, draft):
    html = editor.get(f"/console/digests/{draft}").get_data(as_text=True)
    assert re.search(r'/pause"\s+data-states="sending" hidden>', html)
    assert re.search(r'/resume"\s+data-states="paused" hidden>', html)
    assert re.search(r'/cancel"\s+data-states="draft scheduled sending paused"\s+data-confirm', html)
    assert "Send now" in html and "Send a test copy to editor@example.org" in html


# --- schedule -------------------------------------------------------------------------------------


def test_a_scheduled_digest_goes_out_when_its_time_comes(app, clock, editor, draft):
    # The clock reads 2026-11-02 09:00 UTC; 11:30 in Paris (UTC+1 in November) is 10:30 UTC.
    response = post(editor, f"/console/digests/{draft}/schedule",
                    {"when": "2026-11-02T11:30", "timezone": "Europe/Paris"}, follow_redirects=True)
    assert flashes(response) == [f"Digest {draft} will go out at 2026-11-02 11:30 Europe/Paris (2026-11-02 10:30 UTC)."]
    with app.app_context():
        digest = db.session.get(Digest, draft)
        assert digest.status is DigestStatus.SCHEDULED
        assert digest.scheduled_for == clock() + timedelta(hours=1, minutes=30)
        assert send_due_scheduled(clock() + timedelta(hours=1, minutes=29)) == []
        assert db.session.scalar(select(Delivery.id).limit(1)) is None
        assert send_due_scheduled(clock() + timedelta(hours=1, minutes=31)) == [draft]
        assert send_due_scheduled(clock() + timedelta(hours=1, minutes=32)) == []  # once only
        assert len(db.session.scalars(select(Delivery)).all()) == len(READERS)
    assert status_of(app, draft) is DigestStatus.SENDING
    assert audit_actions(app) == [("digest.schedule", f"digest:{draft}"), ("digest.send", f"digest:{draft}")]


@pytest.mark.parametrize("when, zone, message", [
    ("2026-11-02T08:59", "UTC", "That time has passed: choose a later one, or send now."),
    ("tomorrow", "UTC", "Give a date and a time, e.g. 2026-11-03T08:00."),
    ("2026-12-01T08:00", "Mars/Olympus", "Unknown time zone 'Mars/Olympus'"),
    ("2027-03-28T02:30", "Europe/Paris", "2027-03-28 02:30 does not exist in Europe/Paris"),
])
def test_schedule_refuses_past_malformed_and_nonexistent_times(app, editor, draft, when, zone, message):
    response = post(editor, f"/console/digests/{draft}/schedule", {"when": when, "timezone": zone},
                    follow_redirects=True)
    assert flashes(response)[0].startswith(message)
    assert status_of(app, draft) is DigestStatus.DRAFT


def test_a_cancelled_scheduled_digest_never_goes_out(app, clock, editor, draft):
    post(editor, f"/console/digests/{draft}/schedule", {"when": "2026-11-02T10:00", "timezone": "UTC"})
    post(editor, f"/console/digests/{draft}/cancel")
    with app.app_context():
        assert send_due_scheduled(clock() + timedelta(days=1)) == []
    assert status_of(app, draft) is DigestStatus.CANCELLED


# --- who may, and errors --------------------------------------------------------------------------


def test_viewer_reads_but_cannot_change_anything(app, viewer, draft):
    for path in ("/console/digests/", f"/console/digests/{draft}", f"/console/digests/{draft}/preview",
                 f"/console/digests/{draft}/progress.json"):
        assert viewer.get(path).status_code == 200, path
    page = viewer.get(f"/console/digests/{draft}").get_data(as_text=True)
    assert "Pause" not in page and "Send now" not in page and "Cancel digest" not in page
    assert "Compose a digest" not in viewer.get("/console/digests/").get_data(as_text=True)
    for action in ("send", "test-send", "schedule", "pause", "resume", "cancel", "edit"):
        assert post(viewer, f"/console/digests/{draft}/{action}").status_code == 403, action
    assert viewer.get("/console/digests/new").status_code == 403
    assert status_of(app, draft) is DigestStatus.DRAFT


@pytest.mark.parametrize("action", ["send", "test-send", "schedule", "pause", "resume", "cancel", "edit", "NEW"])
def test_every_change_needs_the_csrf_token(app, smtp, editor, draft, action):
    path = "/console/digests/new" if action == "NEW" else f"/console/digests/{draft}/{action}"
    response = editor.post(path, data={"subject": "S", "when": "2026-12-01T08:00", "timezone": "UTC"})
    assert response.status_code == 400
    assert "security token" in response.get_data(as_text=True)
    assert status_of(app, draft) is DigestStatus.DRAFT
    assert smtp.handler.received == []
    with app.app_context():
        assert len(db.session.scalars(select(Digest)).all()) == 1
    assert audit_actions(app) == []


def test_unknown_digest_is_404(editor):
    assert editor.get("/console/digests/999").status_code == 404
    assert editor.get("/console/digests/999/progress.json").status_code == 404
    assert editor.get("/console/digests/999/preview.html").status_code == 404
    assert post(editor, "/console/digests/999/send").status_code == 404


def test_list_shows_each_digest_with_its_counts(app, editor, viewer, draft):
    post(editor, f"/console/digests/{draft}/send")
    html = viewer.get("/console/digests/").get_data(as_text=True)
    row = re.search(rf"<tr><td>{draft}</td>.*?</tr>", html, re.S).group(0)
    assert "This week" in row and "sending" in row
    assert re.findall(r"<td>(\d+)</td>", row)[1:] == [str(len(READERS)), "0", "0", "0", "0"]
    assert "2026-11-02 09:00" in row


def test_the_console_menu_links_the_digests(viewer):
    assert 'href="/console/digests/">Digests</a>' in viewer.get("/console/").get_data(as_text=True)
