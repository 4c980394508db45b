"""The console's subscriber pages through the real forms, on SQLite and PostgreSQL: search, filter
and keyset pages; the consent ledger; CSV import and export; GDPR export and erasure; roles and CSRF."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import timedelta
from html import unescape

import pytest
from sqlalchemy import func, insert, select

from newsletter import tokens
from newsletter.extensions import db
from newsletter.models import (
    AuditEvent,
    ConsentEvent,
    ConsentKind,
    Delivery,
    DeliveryStatus,
    Digest,
    DigestStatus,
    OutboundEmail,
    Subscriber,
    SubscriberStatus,
    Suppression,
)
from newsletter.services import operators, suppression
from tests.support.console import ConsoleForms, create_operators, flashes, logged_in
from tests.support.forms import form_fields

from tests.support.imports import MIXED_ROWS, run_import_and_open_its_page

ADA = "ada@example.com"


# --- helpers ---------------------------------------------------------------------------------------


FORMS = ConsoleForms("/console/subscribers/")
csrf, post = FORMS.csrf, FORMS.post


def listed_emails(response) -> list[str]:
    return re.findall(r'<a href="/console/subscribers/\d+">([^<]+)</a>', response.get_data(as_text=True))


def pager_link(response, label) -> str | None:
    match = re.search(rf'<a href="([^"]+)" rel="\w+">{label}</a>', response.get_data(as_text=True))
    return unescape(match.group(1)) if match else None


def add_subscribers(clock, emails, status=SubscriberStatus.CONFIRMED, **fields) -> list[int]:
    db.session.execute(insert(Subscriber.__table__), [
        {"email": email, "status": status, "created_at": clock(), **fields} for email in emails])
    db.session.commit()
    return list(db.session.scalars(select(Subscriber.id).where(Subscriber.email.in_(emails)).order_by(Subscriber.id)))


def count(model, *conditions) -> int:
    return db.session.scalar(select(func.count()).select_from(model).where(*conditions))


def upload(client, content: bytes | str, source="Old list, 2025 form", confirmed=True, filename="list.csv"):
    """The upload, the worker's run of its job (here, in this process), and the job's page after it:
    or the refusal, when the upload was refused."""
    data = {"csrf_token": csrf(client), "consent_source": source,
            "file": (io.BytesIO(content.encode() if isinstance(content, str) else content), filename)}
    if confirmed:
        data["confirmed"] = "yes"
    response = client.post("/console/subscribers/import", data=data, content_type="multipart/form-data")
    if response.status_code != 303:
        return response
    return run_import_and_open_its_page(client, response.headers["Location"])


def audit_events(action) -> list[AuditEvent]:
    return list(db.session.scalars(select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)))


def signed_up_and_confirmed(visitor, client, email, clock) -> int:
    """The real way in: the public form, then the confirmation link's button."""
    assert visitor.sign_up(email, name="Ada Lovelace", environ_base={"REMOTE_ADDR": "203.0.113.7"}).status_code == 303
    row = db.session.scalar(select(Subscriber).where(Subscriber.email == email))
    link = f"/confirm/{tokens.make(tokens.CONFIRM, {'s': row.id, 'n': row.optin_nonce}, clock())}"
    fields = form_fields(client.get(link).get_data(as_text=True))
    assert client.post(link, data=fields).status_code in (200, 303)
    db.session.expire_all()
    assert db.session.get(Subscriber, row.id).status is SubscriberStatus.CONFIRMED
    return row.id


@pytest.fixture
def people(app, clock):
    with app.app_context():
        create_operators(clock, ("viewer", "editor", "admin"))


@pytest.fixture
def admin(app, people):
    return logged_in(app, "admin")


@pytest.fixture
def viewer(app, people):
    return logged_in(app, "viewer")


@pytest.fixture
def editor(app, people):
    return logged_in(app, "editor")


# --- the list --------------------------------------------------------------------------------------


def test_search_is_case_insensitive_by_substring_and_filters_by_status(app, viewer, clock):
    with app.app_context():
        add_subscribers(clock, [ADA, "bob@example.org"], SubscriberStatus.PENDING)
        add_subscribers(clock, ["carol@sample.net", "adam@sample.net"], SubscriberStatus.CONFIRMED)
        add_subscribers(clock, ["dan@example.com"], SubscriberStatus.UNSUBSCRIBED)

    page = viewer.get("/console/subscribers/")
    assert sorted(listed_emails(page)) == sorted([ADA, "bob@example.org", "carol@sample.net", "adam@sample.net",
                                                  "dan@example.com"])
    html = page.get_data(as_text=True)
    assert 'id="count-all">5<' in html and 'id="count-pending">2<' in html and 'id="count-confirmed">2<' in html

    assert sorted(listed_emails(viewer.get("/console/subscribers/?q=ADA"))) == ["ada@example.com", "adam@sample.net"]
    assert sorted(listed_emails(viewer.get("/console/subscribers/?q=%40example."))) == [
        ADA, "bob@example.org", "dan@example.com"]
    assert listed_emails(viewer.get("/console/subscribers/?q=ada&status=pending")) == [ADA]
    filtered = viewer.get("/console/subscribers/?status=confirmed")
    assert sorted(listed_emails(filtered)) == ["adam@sample.net", "carol@sample.net"]
    assert "2 matches." in filtered.get_data(as_text=True)
    # LIKE wildcards are searched for literally.
    assert listed_emails(viewer.get("/console/subscribers/?q=%25")) == []
    assert listed_emails(viewer.get("/console/subscribers/?q=a_a")) == []

    unknown = viewer.get("/console/subscribers/?status=deleted")
    assert unknown.status_code == 200
    assert "There is no status 'deleted'; showing every status." in flashes(unknown)
    assert len(listed_emails(unknown)) == 5


def test_keyset_pages_walk_every_subscriber_once_each_way_keeping_the_filter(app, viewer, clock):
    with app.app_context():
        confirmed = [f"c{n:03d}@example.com" for n in range(120)]
        add_subscribers(clock, confirmed[:60])
        add_subscribers(clock, [f"p{n:03d}@example.com" for n in range(30)], SubscriberStatus.PENDING)
        add_subscribers(clock, confirmed[60:])

    pages, link = [], "/console/subscribers/?status=confirmed"
    while link:
        response = viewer.get(link)
        pages.append(listed_emails(response))
        link = pager_link(response, "Older")
        assert link is None or "status=confirmed" in link
    assert [len(page) for page in pages] == [50, 50, 20]
    assert sum(pages, []) == list(reversed(confirmed))  # newest first, each exactly once

    back, link = [], pager_link(response, "Newer")
    while link:
        response = viewer.get(link)
        back.append(listed_emails(response))
        link = pager_link(response, "Newer")
    assert back == [pages[1], pages[0]]

    # Garbage and out-of-range cursors are ignored, never a 500.
    for query in ("before=abc", "before=99999999999999999999", "after=-1", "before=%C2%B2"):
        assert viewer.get(f"/console/subscribers/?{query}").status_code == 200


def test_the_list_pages_by_keyset_on_100000_subscribers(app, viewer, clock):
    """Fast on a big list by construction: every page is an index range scan from a cursor, never
    an OFFSET that reads and throws away all the rows before it (no timing here: the machine is shared)."""
    from sqlalchemy import event

    with app.app_context():
        rows = [{"email": f"reader{n:06d}@example.com", "status": SubscriberStatus.CONFIRMED, "created_at": clock()}
                for n in range(100_000)]
        for start in range(0, len(rows), 10_000):
            db.session.execute(insert(Subscriber.__table__), rows[start:start + 10_000])
        db.session.commit()
        deep = db.session.scalar(select(Subscriber.id).where(Subscriber.email == "reader000120@example.com"))
        engine = db.engine

    statements = []

    def record(conn, cursor, statement, parameters, context, executemany):
        statements.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        for path in ("/console/subscribers/", f"/console/subscribers/?before={deep}",
                     "/console/subscribers/?q=reader0999", f"/console/subscribers/?status=confirmed&before={deep}"):
            assert viewer.get(path).status_code == 200
    finally:
        event.remove(engine, "before_cursor_execute", record)
    listing = [(s, p) for s, p in statements if "FROM subscriber" in s and "ORDER BY subscriber.id" in s]
    # (SQLAlchemy writes "LIMIT ? OFFSET ?" on SQLite even without an offset; the offset is then 0.)
    assert listing and all("OFFSET" not in s or p[-1] == 0 for s, p in listing)
    assert any("subscriber.id < " in s for s, _ in listing)  # the deep pages start from their cursor
    assert listed_emails(viewer.get(f"/console/subscribers/?before={deep}"))[:2] == [
        "reader000119@example.com", "reader000118@example.com"]
    assert len(listed_emails(viewer.get("/console/subscribers/?q=reader0999"))) == 50


# --- one subscriber ---------------------------------------------------------------------------------


def test_subscriber_page_shows_status_and_the_consent_ledger(app, viewer, admin, visitor, client, clock):
    with app.app_context():
        subscriber_id = signed_up_and_confirmed(visitor, client, ADA, clock)

    page = viewer.get(f"/console/subscribers/{subscriber_id}")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert ADA in html and "Ada Lovelace" in html
    assert '<span class="status confirmed" id="status">confirmed</span>' in html
    ledger = re.search(r'<table class="grid ledger">(.*?)</table>', html, re.S).group(1)
    rows = re.findall(r"<tr><td>(.*?)</td><td>(\w+)</td>", ledger)
    assert [kind for _, kind in rows] == ["requested", "confirmed"]
    assert "203.0.113.7" in ledger and "v1" in ledger and "<td>yes</td>" in ledger  # IP, terms, raw checkbox
    assert "Erase" not in html and "Download their data" not in html  # admins only

    admin_html = admin.get(f"/console/subscribers/{subscriber_id}").get_data(as_text=True)
    assert "Download their data" in admin_html and 'name="confirm_email"' in admin_html
    assert viewer.get("/console/subscribers/999999").status_code == 404
    assert viewer.get("/console/subscribers/99999999999999999999").status_code == 404


# --- CSV import --------------------------------------------------------------------------------------


def test_import_through_the_console_reports_bad_rows_by_line_and_is_audited(app, admin, clock):
    with app.app_context():
        suppression.suppress("gone@example.com", "hard-bounce", clock())
        add_subscribers(clock, ["known@example.com"])
    response = upload(admin, MIXED_ROWS)
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert 'id="imported">2<' in html
    assert "Skipped, already subscribers: 1" in html and "Skipped, on the suppression list: 1" in html
    assert "Skipped, repeated in the file: 1" in html
    bad = re.findall(r"<tr><td>(\d+)</td><td>(.*?)</td></tr>", html)
    assert [line for line, _ in bad] == ["3", "7"]  # the quoted row that spans lines 7-8 starts on 7
    assert bad[0][1].startswith("That email address is not valid")
    assert "Imported 2 subscribers (confirmed)." in flashes(response)
    assert "2 rows could not be imported; they are listed below by line." in flashes(response)
    with app.app_context():
        ada = db.session.scalar(select(Subscriber).where(Subscriber.email == ADA))
        assert (ada.status, ada.name) == (SubscriberStatus.CONFIRMED, "Ada Lovelace")
        assert [(e.kind, e.source) for e in ada.events] == [(ConsentKind.IMPORTED, "Old list, 2025 form")]
        assert count(OutboundEmail) == 0
        [event] = audit_events("subscribers.import")
        assert event.operator.email == "admin@example.org"
        assert json.loads(event.detail) == {
            "consent_source": "Old list, 2025 form", "confirmed": True, "imported": 2, "skipped_existing": 1,
            "skipped_suppressed": 1, "skipped_duplicate": 1, "bad_rows": 2}


def test_import_without_confirmed_makes_pending_people_with_a_confirmation_each(app, admin):
    response = upload(admin, "\ufeffemail\nnew1@example.com\nnew2@example.com\n", confirmed=False)
    assert response.status_code == 200
    assert "Imported 2 subscribers (pending, each sent a confirmation email)." in flashes(response)
    with app.app_context():
        assert set(db.session.scalars(select(Subscriber.status))) == {SubscriberStatus.PENDING}
        assert sorted(db.session.scalars(select(OutboundEmail.recipient))) == ["new1@example.com", "new2@example.com"]


@pytest.mark.parametrize("case, expected", [
    ("no source", "Say where these people gave their consent"),
    ("no file", "Choose a CSV file to import."),
    ("no email column", "No 'email' column in the header"),
    ("empty", "The file is empty"),
    ("not utf-8", "Line 2502 of the file is not UTF-8 text."),
    ("not csv", "The file is not a readable CSV file (line 2503): field larger than field limit"),
])
def test_bad_imports_are_refused_with_a_clear_message_and_change_nothing(app, admin, case, expected):
    good = "email\n" + "".join(f"r{n}@example.com\n" for n in range(2500))  # more than one batch of 2,000
    if case == "no source":
        response = upload(admin, good, source="  ")
    elif case == "no file":
        response = admin.post("/console/subscribers/import", content_type="multipart/form-data",
                              data={"csrf_token": csrf(admin), "consent_source": "x"})
    elif case == "no email column":
        response = upload(admin, "mail,name\na@example.com,A\n")
    elif case == "empty":
        response = upload(admin, "")
    elif case == "not utf-8":  # a Latin-1 byte after the first batch: refused before any batch is written
        response = upload(admin, good.encode() + "zoë@example.com\n".encode("latin-1"))
    else:  # an unclosed quote swallows the rest of a long file into one field
        response = upload(admin, good + "b@example.com,\"Bob\n" + "x" * 200_000 + "\n")
    assert response.status_code == 400
    assert any(message.startswith(expected) for message in flashes(response)), flashes(response)
    with app.app_context():
        assert (count(Subscriber), count(ConsentEvent), count(OutboundEmail)) == (0, 0, 0)
        assert audit_events("subscribers.import") == []


# --- CSV export --------------------------------------------------------------------------------------


def test_csv_export_streams_every_subscriber_and_is_audited(app, admin, clock):
    with app.app_context():
        add_subscribers(clock, [f"r{n:04d}@example.com" for n in range(2500)])
        add_subscribers(clock, [ADA], name="=HYPERLINK(\"https://evil.example\")", confirmed_at=clock(),
                        unsubscribed_at=clock() + timedelta(days=1), status=SubscriberStatus.UNSUBSCRIBED)

    response = admin.post("/console/subscribers/export.csv", data={"csrf_token": csrf(admin)}, buffered=False)
    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    assert response.headers["Content-Disposition"].startswith('attachment; filename="subscribers-')
    assert response.is_streamed
    chunks = [chunk.decode() if isinstance(chunk, bytes) else chunk for chunk in response.response]
    assert len(chunks) >= 3  # one batch of rows at a time, never the whole list at once
    rows = list(csv.DictReader(io.StringIO("".join(chunks))))
    assert list(rows[0]) == ["email", "name", "status", "created_at", "confirmed_at", "unsubscribed_at"]
    assert len(rows) == 2501
    assert rows[0] == {"email": "r0000@example.com", "name": "", "status": "confirmed",
                       "created_at": "2026-11-02T09:00:00Z", "confirmed_at": "", "unsubscribed_at": ""}
    assert rows[-1] == {"email": ADA, "name": "'=HYPERLINK(\"https://evil.example\")", "status": "unsubscribed",
                        "created_at": "2026-11-02T09:00:00Z", "confirmed_at": "2026-11-02T09:00:00Z",
                        "unsubscribed_at": "2026-11-03T09:00:00Z"}
    with app.app_context():
        [event] = audit_events("subscribers.export")
        assert json.loads(event.detail) == {"rows": 2501}


FORMULA_ADDRESSES = ["=1+2@example.com", "+cmd|'/ccalc'!a0@example.com", "-2+3@example.com"]


def test_csv_export_escapes_a_formula_in_every_cell_the_address_too(app, admin):
    # Valid addresses, taken in by the import like any other, that a spreadsheet would run as formulas.
    html = upload(admin, "email,name\n" + "".join(f"{email},@SUM(1+1)\n" for email in FORMULA_ADDRESSES)
                  ).get_data(as_text=True)
    assert 'id="imported">3<' in html
    response = admin.post("/console/subscribers/export.csv", data={"csrf_token": csrf(admin)})
    rows = list(csv.reader(io.StringIO(response.get_data(as_text=True))))[1:]
    assert [(row[0], row[1]) for row in rows] == [("'" + email, "'@SUM(1+1)") for email in FORMULA_ADDRESSES]
    formula = re.compile(r"^[=+\-@\t\r]")
    assert [cell for row in rows for cell in row if formula.match(cell)] == []


# --- GDPR --------------------------------------------------------------------------------------------


def add_delivery(clock, subscriber_id, subject="Weekly news") -> int:
    digest = Digest(subject=subject, status=DigestStatus.DONE, created_at=clock(), sent_at=clock())
    db.session.add(digest)
    db.session.flush()
    db.session.add(Delivery(digest_id=digest.id, subscriber_id=subscriber_id, status=DeliveryStatus.SENT,
                            attempts=1, next_attempt_at=clock(), sent_at=clock()))
    db.session.commit()
    return digest.id


def test_gdpr_export_is_everything_on_one_person_and_nobody_else(app, admin, visitor, client, clock):
    with app.app_context():
        subscriber_id = signed_up_and_confirmed(visitor, client, ADA, clock)
        digest_id = add_delivery(clock, subscriber_id)
        [other] = add_subscribers(clock, ["bob@example.org"])
        add_delivery(clock, other, subject="Other news")

    response = post(admin, f"/console/subscribers/{subscriber_id}/export.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.headers["Content-Disposition"] == f'attachment; filename="subscriber-{subscriber_id}.json"'
    data = response.get_json()
    assert data["subscriber"] == {"id": subscriber_id, "email": ADA, "name": "Ada Lovelace", "status": "confirmed",
                                  "created_at": "2026-11-02T09:00:05Z", "confirmed_at": "2026-11-02T09:00:05Z",
                                  "unsubscribed_at": None}
    assert [event["kind"] for event in data["consent_events"]] == ["requested", "confirmed"]
    assert data["consent_events"][0]["ip"] == "203.0.113.7"
    assert data["consent_events"][0]["terms_version"] == 1
    assert data["deliveries"] == [{"digest_id": digest_id, "subject": "Weekly news", "status": "sent", "attempts": 1,
                                   "sent_at": "2026-11-02T09:00:05Z", "last_error": None}]
    [email] = data["outbound_emails"]
    assert (email["kind"], email["status"], email["recipient"]) == ("confirm", "pending", ADA)
    assert email["subject"].startswith("Please confirm your subscription to")
    assert "message" not in email
    assert data["suppression"] == {"suppressed": False, "reason": None, "since": None}
    assert "bob@example.org" not in response.get_data(as_text=True)
    assert "Other news" not in response.get_data(as_text=True)
    with app.app_context():
        [event] = audit_events("subscribers.gdpr_export")
        assert event.target == f"subscriber:{subscriber_id}" and event.detail is None


def every_row_mentioning(text: str) -> list[str]:
    """Every row of every table whose values mention `text`, case-insensitively."""
    found = []
    for table in db.metadata.sorted_tables:
        for row in db.session.execute(select(table)):
            if any(text.lower() in str(value).lower() for value in row if value is not None):
                found.append(f"{table.name}: {tuple(row)}")
    return found


def test_erase_leaves_no_row_with_the_address_keeps_the_hmac_and_a_later_signup_gets_no_mail(
        app, admin, visitor, client, clock, smtp):
    with app.app_context():
        subscriber_id = signed_up_and_confirmed(visitor, client, ADA, clock)
        add_delivery(clock, subscriber_id)
        [bystander] = add_subscribers(clock, ["bob@example.org"])
        add_delivery(clock, bystander)
        operators.audit(None, "api.subscriber.create", f"subscriber:{subscriber_id}",
                        {"source": "Ada (ADA@example.com) asked at the fair"}, None, clock())
        db.session.commit()
        tables = {row.split(":")[0] for row in every_row_mentioning(ADA)}
        assert tables == {"subscriber", "outbound_email", "audit_event"}
        assert count(ConsentEvent, ConsentEvent.subscriber_id == subscriber_id) == 2
        assert count(Delivery, Delivery.subscriber_id == subscriber_id) == 1

    refused = post(admin, f"/console/subscribers/{subscriber_id}/erase", {"confirm_email": "bob@example.org"})
    assert refused.status_code == 302
    assert "Nothing was erased" in flashes(admin.get(refused.headers["Location"]))[0]
    with app.app_context():
        assert db.session.get(Subscriber, subscriber_id) is not None

    response = post(admin, f"/console/subscribers/{subscriber_id}/erase", {"confirm_email": "  Ada@Example.com "},
                    follow_redirects=True)
    assert f"Subscriber {subscriber_id} erased with all their data." in flashes(response)[0]
    assert ADA not in response.get_data(as_text=True)
    with app.app_context():
        assert every_row_mentioning(ADA) == []
        assert every_row_mentioning("ada@example") == []
        for model in (ConsentEvent, OutboundEmail, Delivery):
            assert count(model, model.subscriber_id == subscriber_id) == 0
        [kept] = db.session.scalars(select(Suppression)).all()
        assert (kept.address_hmac, kept.reason) == (suppression.address_hmac(ADA), "erased")
        [event] = audit_events("subscribers.erase")
        assert (event.target, event.detail, event.operator.email) == (
            f"subscriber:{subscriber_id}", None, "admin@example.org")
        # The bystander and their delivery are untouched.
        assert db.session.get(Subscriber, bystander).email == "bob@example.org"
        assert count(Delivery, Delivery.subscriber_id == bystander) == 1

    # Signing up again is answered as always, and nothing is stored or sent.
    assert visitor.sign_up("ada@example.com").status_code == 303
    with app.app_context():
        assert (count(Subscriber, Subscriber.email == ADA), count(OutboundEmail), count(ConsentEvent)) == (0, 0, 0)
    assert smtp.handler.received == []
    # And an import skips it as suppressed.
    assert "Skipped, on the suppression list: 1" in upload(admin, "email\nada@example.com\n").get_data(as_text=True)


# --- roles and CSRF ----------------------------------------------------------------------------------


def admin_actions(subscriber_id) -> list[tuple[str, str, dict]]:
    return [
        ("GET", "/console/subscribers/import", {}),
        ("POST", "/console/subscribers/import", {"consent_source": "x", "file": (io.BytesIO(b"email\nz@example.com\n"),
                                                                                  "l.csv")}),
        ("POST", "/console/subscribers/export.csv", {}),
        ("POST", f"/console/subscribers/{subscriber_id}/export.json", {}),
        ("POST", f"/console/subscribers/{subscriber_id}/erase", {"confirm_email": ADA}),
    ]


@pytest.mark.parametrize("role", ["viewer", "editor"])
def test_only_admins_import_export_or_erase(app, role, clock, request):
    client = request.getfixturevalue(role)
    with app.app_context():
        [subscriber_id] = add_subscribers(clock, [ADA])
    assert client.get("/console/subscribers/").status_code == 200
    assert client.get(f"/console/subscribers/{subscriber_id}").status_code == 200
    for method, path, data in admin_actions(subscriber_id):
        data = {"csrf_token": csrf(client), **data} if method == "POST" else None
        response = client.open(path, method=method, data=data)
        assert response.status_code == 403, (method, path)
    with app.app_context():
        assert count(Subscriber) == 1 and count(Suppression) == 0
        assert count(AuditEvent, AuditEvent.action.like("subscribers.%")) == 0


def test_every_form_without_the_csrf_token_is_refused_and_changes_nothing(app, admin, clock):
    with app.app_context():
        [subscriber_id] = add_subscribers(clock, [ADA])
    for method, path, data in admin_actions(subscriber_id):
        if method != "POST":
            continue
        response = admin.post(path, data=data)
        assert response.status_code == 400, path
        assert "security token" in response.get_data(as_text=True)
    with app.app_context():
        assert count(Subscriber) == 1 and count(Suppression) == 0
        assert count(AuditEvent, AuditEvent.action.like("subscribers.%")) == 0
