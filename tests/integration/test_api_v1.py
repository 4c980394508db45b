"""The operators' JSON API (/api/v1 with per-operator tokens), on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from newsletter.extensions import db
from newsletter.models import (
    ApiToken,
    Article,
    AuditEvent,
    ConsentEvent,
    Delivery,
    DeliveryStatus,
    Digest,
    DigestArticle,
    DigestStatus,
    OutboundEmail,
    Operator,
    Role,
    Subscriber,
    SubscriberStatus,
)
from newsletter.services import delivery, operators, suppression
from newsletter.services.terms import publish_terms

STATUS_KEYS = {"status", "total", "pending", "sent", "deferred", "failed", "skipped"}
NEW_PERSON = {"email": "Ada@Example.com", "name": "Ada", "consent": True, "consent_source": "paper form, book fair"}


class Api:
    """The client of one of the site's systems, holding one token per role."""

    def __init__(self, client, tokens):
        self.client = client
        self.tokens = tokens

    def __call__(self, method, path, role: Role | None = Role.ADMIN, **kwargs):
        headers = dict(kwargs.pop("headers", {}))
        if role is not None:
            headers["Authorization"] = f"Bearer {self.tokens[role]}"
        return self.client.open(f"/api/v1{path}", method=method, headers=headers, **kwargs)


@pytest.fixture
def operator_ids(app, clock):
    # No password: these operators only ever use tokens (and argon2 would cost ~0.15 s per operator).
    with app.app_context():
        people = {role: Operator(email=f"{role.value}@example.org", role=role, password_hash="!", active=True,
                                 failed_logins=0, created_at=clock()) for role in Role}
        db.session.add_all(people.values())
        db.session.commit()
        return {role: operator.id for role, operator in people.items()}


@pytest.fixture
def api(app, client, clock, operator_ids):
    with app.app_context():
        tokens = {role: operators.create_api_token(db.session.get(Operator, operator_id), "site", clock())[1]
                  for role, operator_id in operator_ids.items()}
    return Api(client, tokens)


def add_subscriber(clock, email, status=SubscriberStatus.CONFIRMED, name=None) -> int:
    subscriber = Subscriber(email=email, name=name, status=status, created_at=clock())
    db.session.add(subscriber)
    db.session.commit()
    return subscriber.id


def add_article(clock, title, hours_ago=0, published=True) -> int:
    when = clock() - timedelta(hours=hours_ago)
    article = Article(key=f"https://news.example.org/a/{title}", url=f"https://news.example.org/a/{title}",
                      title=title, summary_html="<p>Text.</p>", published_at=when if published else None,
                      created_at=when, updated_at=when, hidden=False, source="api")
    db.session.add(article)
    db.session.commit()
    return article.id


def audit_actions(app) -> list[tuple[str, str | None]]:
    with app.app_context():
        return [(e.action, e.target) for e in db.session.scalars(select(AuditEvent).order_by(AuditEvent.id))
                if e.action.startswith("api.")]


def count(app, model) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(model))


# --- authentication and roles -------------------------------------------------------------------


@pytest.mark.parametrize("header", [None, "Bearer", "Bearer   ", "Basic dXNlcjpwYXNz", "Bearer nlt_not-a-token"])
def test_missing_malformed_or_unknown_token_is_401_json(api, header):
    headers = {"Authorization": header} if header is not None else {}
    response = api("GET", "/subscribers", role=None, headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert "Bearer <API token>" in response.get_json()["error"]


def test_revoked_token_stops_working_at_once(app, api, clock, operator_ids):
    assert api("GET", "/subscribers", role=Role.VIEWER).status_code == 200
    with app.app_context():
        operator = db.session.get(Operator, operator_ids[Role.VIEWER])
        token_id = db.session.scalar(select(ApiToken.id).where(ApiToken.operator_id == operator.id))
        operators.revoke_api_token(operator, token_id, "127.0.0.1", clock())
    assert api("GET", "/subscribers", role=Role.VIEWER).status_code == 401
    assert api("GET", "/subscribers", role=Role.ADMIN).status_code == 200  # other tokens are untouched


def test_token_of_a_deactivated_operator_is_refused(app, api, operator_ids):
    with app.app_context():
        db.session.get(Operator, operator_ids[Role.EDITOR]).active = False
        db.session.commit()
    assert api("GET", "/articles", role=Role.EDITOR).status_code == 401


@pytest.mark.parametrize("method, path", [
    ("POST", "/subscribers"), ("DELETE", "/subscribers/1"), ("POST", "/digests"), ("POST", "/digests/1/send"),
    ("POST", "/digests/1/pause"), ("POST", "/digests/1/resume"), ("POST", "/digests/1/cancel"),
])
def test_viewer_may_not_change_anything(app, api, clock, method, path):
    with app.app_context():
        add_subscriber(clock, "reader@example.com")
    response = api(method, path, role=Role.VIEWER, json=NEW_PERSON)
    assert response.status_code == 403
    assert response.get_json() == {"error": f"Your role (viewer) may not do this; it needs "
                                            f"{'admin' if 'subscribers' in path else 'editor'}."}
    assert count(app, Subscriber) == 1
    assert audit_actions(app) == []


@pytest.mark.parametrize("method, path", [("POST", "/subscribers"), ("DELETE", "/subscribers/1")])
def test_editor_may_not_change_subscribers_data(app, api, clock, method, path):
    with app.app_context():
        add_subscriber(clock, "reader@example.com")
    assert api(method, path, role=Role.EDITOR, json=NEW_PERSON).status_code == 403
    assert count(app, Subscriber) == 1


@pytest.mark.parametrize("path", ["/subscribers", "/subscribers/1", "/articles", "/digests/1", "/digests/1/status"])
def test_viewer_reads_everything(app, api, clock, path):
    with app.app_context():
        add_subscriber(clock, "reader@example.com")
        article_id = add_article(clock, "story")
        digest = Digest(subject="S", status=DigestStatus.DRAFT, created_at=clock())
        digest.items = [DigestArticle(article_id=article_id, position=0)]
        db.session.add(digest)
        db.session.commit()
    assert api("GET", path, role=Role.VIEWER).status_code == 200


# --- JSON errors --------------------------------------------------------------------------------


def test_unknown_ids_are_404_naming_the_id(api):
    assert api("GET", "/subscribers/7").get_json() == {"error": "No subscriber with id 7."}
    for path in ("/digests/7", "/digests/7/status"):
        response = api("GET", path)
        assert (response.status_code, response.get_json()) == (404, {"error": "No digest with id 7."})
    for action in ("send", "pause", "resume", "cancel"):
        assert api("POST", f"/digests/7/{action}").status_code == 404
    assert api("DELETE", "/subscribers/7").status_code == 404


def test_ids_beyond_any_integer_column_are_404_not_a_crash(api):
    for path in ("/subscribers/99999999999999999999999", "/digests/9223372036854775808/status"):
        response = api("GET", path)
        assert response.status_code == 404
        assert "error" in response.get_json()


def test_unknown_route_and_method_answer_json(api):
    response = api("PUT", "/subscribers")
    assert response.status_code == 405 and response.get_json() == {"error": "Method PUT is not allowed here."}
    assert api("GET", "/nothing-here").get_json() == {"error": "Not found."}


def test_api_needs_no_csrf_token(app, api):
    app.config["WTF_CSRF_ENABLED"] = True
    assert api("POST", "/subscribers", json=NEW_PERSON).status_code == 201


# --- subscribers --------------------------------------------------------------------------------


def test_subscribers_come_in_keyset_pages(app, api, clock):
    with app.app_context():
        ids = [add_subscriber(clock, f"reader{i}@example.com") for i in range(5)]
    first = api("GET", "/subscribers?limit=2", role=Role.VIEWER).get_json()
    assert [s["id"] for s in first["items"]] == ids[:2] and first["next_after_id"] == ids[1]
    second = api("GET", f"/subscribers?limit=2&after_id={first['next_after_id']}").get_json()
    assert [s["id"] for s in second["items"]] == ids[2:4]
    last = api("GET", f"/subscribers?limit=2&after_id={second['next_after_id']}").get_json()
    assert [s["id"] for s in last["items"]] == ids[4:] and last["next_after_id"] is None
    exact = api("GET", "/subscribers?limit=5").get_json()
    assert len(exact["items"]) == 5 and exact["next_after_id"] is None  # no empty page to fetch after it
    assert exact["items"][0] == {"id": ids[0], "email": "reader0@example.com", "name": None, "status": "confirmed",
                                 "created_at": "2026-11-02T09:00:00Z", "confirmed_at": None, "unsubscribed_at": None}


def test_subscribers_filter_by_status_and_email_text(app, api, clock):
    with app.app_context():
        add_subscriber(clock, "ada@example.com")
        add_subscriber(clock, "bob@example.org", status=SubscriberStatus.PENDING)
        add_subscriber(clock, "ada_lovelace@example.org", status=SubscriberStatus.UNSUBSCRIBED)
        add_subscriber(clock, "adaxlovelace@example.org")

    def emails(query):
        return [s["email"] for s in api("GET", f"/subscribers?{query}").get_json()["items"]]

    assert emails("status=pending") == ["bob@example.org"]
    assert emails("email=ADA") == ["ada@example.com", "ada_lovelace@example.org", "adaxlovelace@example.org"]
    assert emails("email=ada_") == ["ada_lovelace@example.org"]  # _ is a letter here, not a LIKE wildcard
    assert emails("email=ada&status=confirmed") == ["ada@example.com", "adaxlovelace@example.org"]
    assert emails("email=%25") == []


@pytest.mark.parametrize("query, field", [
    ("limit=0", "limit"), ("limit=501", "limit"), ("limit=ten", "limit"), ("after_id=-1", "after_id"),
    ("after_id=1.5", "after_id"), ("status=sleeping", "status"), ("email=a%0Ab", "email"),
])
def test_subscriber_list_refuses_bad_parameters(api, query, field):
    response = api("GET", f"/subscribers?{query}")
    assert response.status_code == 400
    assert response.get_json()["field"] == field


def test_a_subscriber_comes_with_their_consent_record(app, api, client, clock):
    with app.app_context():
        publish_terms("Our terms.", clock())
    client.post("/api/v1/subscribe", json={"email": "ada@example.com", "consent": "yes", "source": "blog"},
                headers={"User-Agent": "NewsSite/1.0"})
    with app.app_context():
        subscriber_id = db.session.scalar(select(Subscriber.id))
    body = api("GET", f"/subscribers/{subscriber_id}", role=Role.VIEWER).get_json()
    assert body["status"] == "pending"
    assert body["consent_events"] == [{
        "kind": "requested", "at": "2026-11-02T09:00:00Z", "ip": "127.0.0.1", "user_agent": "NewsSite/1.0",
        "source": "api: blog", "terms_version": 1, "terms_sha256": body["consent_events"][0]["terms_sha256"],
        "checkbox_value": "yes",
    }]
    assert len(body["consent_events"][0]["terms_sha256"]) == 64


def test_admin_adds_a_person_with_recorded_consent_and_double_opt_in(app, api):
    response = api("POST", "/subscribers", json=NEW_PERSON, headers={"User-Agent": "CRM/2.0"})
    assert response.status_code == 201
    body = response.get_json()
    assert body["email"] == "ada@example.com" and body["status"] == "pending" and body["name"] == "Ada"
    assert "confirmation email" in body["message"]
    assert response.headers["Location"].endswith(f"/api/v1/subscribers/{body['id']}")
    with app.app_context():
        event = db.session.scalar(select(ConsentEvent))
        assert (event.kind.value, event.source, event.ip, event.user_agent, event.checkbox_value) == (
            "requested", "api-operator: paper form, book fair", "127.0.0.1", "CRM/2.0", "true")
        assert event.terms.version == 1 and event.terms_sha256 == event.terms.sha256  # the current terms
        outbound = db.session.scalar(select(OutboundEmail))
        assert outbound.kind == "confirm" and outbound.recipient == "ada@example.com"
        audit = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "api.subscriber.create"))
        assert audit.operator.email == "admin@example.org" and audit.target == f"subscriber:{body['id']}"
        assert json.loads(audit.detail) == {"outcome": "created", "was": None, "source": "paper form, book fair"}


@pytest.mark.parametrize("consent", [False, "no", "off", 0, None, "absent"])
def test_consent_that_is_not_a_real_yes_is_refused_and_nothing_stored(app, api, consent):
    person = {**NEW_PERSON, "consent": consent}
    if consent == "absent":
        del person["consent"]
    response = api("POST", "/subscribers", json=person)
    assert response.status_code == 400
    assert response.get_json()["field"] == "consent"
    assert (count(app, Subscriber), count(app, ConsentEvent), count(app, OutboundEmail)) == (0, 0, 0)
    assert audit_actions(app) == []


@pytest.mark.parametrize("change, field", [
    ({"consent_source": None}, "consent_source"), ({"consent_source": "  "}, "consent_source"),
    ({"consent_source": "x" * 201}, "consent_source"), ({"consent_source": "form\r\nBcc: x"}, "consent_source"),
    ({"email": "not an address"}, "email"), ({"email": None}, "email"), ({"name": "A\nB"}, "name"),
    ({"name": 5}, "name"),
])
def test_bad_subscriber_input_is_refused_and_nothing_stored(app, api, change, field):
    response = api("POST", "/subscribers", json={**NEW_PERSON, **change})
    assert (response.status_code, response.get_json()["field"]) == (400, field)
    assert count(app, Subscriber) == 0


def test_subscriber_body_must_be_a_json_object(app, api):
    for kwargs in ({"data": "email=a@example.com"}, {"json": ["a@example.com"]}):
        response = api("POST", "/subscribers", **kwargs)
        assert (response.status_code, response.get_json()["field"]) == (400, "body")


def test_known_addresses_answer_what_happened(app, api, clock):
    with app.app_context():
        add_subscriber(clock, "done@example.com")
        add_subscriber(clock, "gone@example.com", status=SubscriberStatus.UNSUBSCRIBED)
    api("POST", "/subscribers", json=NEW_PERSON)

    again = api("POST", "/subscribers", json=NEW_PERSON)
    assert (again.status_code, again.get_json()["status"]) == (202, "pending")
    back = api("POST", "/subscribers", json={**NEW_PERSON, "email": "gone@example.com"})
    assert (back.status_code, back.get_json()["status"]) == (202, "pending")  # a new opt-in round
    confirmed = api("POST", "/subscribers", json={**NEW_PERSON, "email": "done@example.com"})
    assert (confirmed.status_code, confirmed.get_json()["status"]) == (200, "confirmed")
    assert "nothing changed" in confirmed.get_json()["message"]
    with app.app_context():
        done_events = db.session.scalar(select(func.count()).select_from(ConsentEvent).join(Subscriber)
                                        .where(Subscriber.email == "done@example.com"))
    assert done_events == 0
    assert [action for action, _ in audit_actions(app)] == ["api.subscriber.create"] * 3


def test_suppressed_address_is_409_and_nothing_changes(app, api, clock):
    with app.app_context():
        suppression.suppress("ada@example.com", "hard-bounce", clock())
        db.session.commit()
    response = api("POST", "/subscribers", json=NEW_PERSON)
    assert response.status_code == 409
    assert response.get_json()["field"] == "email" and "suppression list" in response.get_json()["error"]
    assert (count(app, Subscriber), count(app, OutboundEmail)) == (0, 0)


def test_erasure_removes_the_person_and_keeps_only_a_suppression_hash(app, api, client, clock):
    api("POST", "/subscribers", json={**NEW_PERSON, "consent_source": "a reply from Ada@example.com"})
    with app.app_context():
        subscriber_id = db.session.scalar(select(Subscriber.id))
        keep = add_subscriber(clock, "stays@example.com")
        digest = Digest(subject="S", status=DigestStatus.DRAFT, created_at=clock())
        db.session.add(digest)
        db.session.flush()
        for person in (subscriber_id, keep):
            db.session.add(Delivery(digest_id=digest.id, subscriber_id=person, status=DeliveryStatus.PENDING,
                                    attempts=0, next_attempt_at=clock()))
        db.session.commit()

    response = api("DELETE", f"/subscribers/{subscriber_id}")
    assert (response.status_code, response.get_data()) == (204, b"")
    assert api("GET", f"/subscribers/{subscriber_id}").status_code == 404
    assert api("DELETE", f"/subscribers/{subscriber_id}").status_code == 404
    with app.app_context():
        assert db.session.scalars(select(Subscriber.email)).all() == ["stays@example.com"]
        assert db.session.scalars(select(Delivery.subscriber_id)).all() == [keep]
        assert (count(app, ConsentEvent), count(app, OutboundEmail)) == (0, 0)
        assert suppression.is_suppressed("ada@example.com")
        erase = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "subscribers.erase"))
        assert erase.target == f"subscriber:{subscriber_id}" and erase.detail is None
        assert (erase.operator.email, erase.ip) == ("admin@example.org", "127.0.0.1")
        # The creation's audit quoted the address in its consent source: the address is gone from there too.
        details = " ".join(e.detail or "" for e in db.session.scalars(select(AuditEvent)))
        assert "ada@example.com" not in details.lower() and "a reply from [erased subscriber:" in details
    # The same person signing up again is never mailed: the public answer is the same as ever.
    assert client.post("/api/v1/subscribe", json={"email": "ada@example.com", "consent": True}).status_code == 202
    assert count(app, Subscriber) == 1 and count(app, OutboundEmail) == 0


# --- articles -----------------------------------------------------------------------------------


def test_articles_come_newest_first_in_keyset_pages(app, api, clock):
    with app.app_context():
        old = add_article(clock, "old", hours_ago=30)
        newest = add_article(clock, "newest", hours_ago=1)
        tie_a = add_article(clock, "tie a", hours_ago=5)
        tie_b = add_article(clock, "tie b", hours_ago=5)
        undated = add_article(clock, "undated, added 3 hours ago", hours_ago=3, published=False)
    order = [newest, undated, tie_b, tie_a, old]
    seen, after = [], ""
    while True:
        page = api("GET", f"/articles?limit=2{after}", role=Role.VIEWER).get_json()
        seen += [item["id"] for item in page["items"]]
        if page["next_after_id"] is None:
            break
        after = f"&after_id={page['next_after_id']}"
    assert seen == order
    first = api("GET", "/articles?limit=1").get_json()["items"][0]
    assert first == {"id": newest, "url": "https://news.example.org/a/newest", "title": "newest",
                     "summary_html": "<p>Text.</p>", "author": None, "image_url": None,
                     "published_at": "2026-11-02T08:00:00Z", "created_at": "2026-11-02T08:00:00Z",
                     "updated_at": "2026-11-02T08:00:00Z", "source": "api", "hidden": False}


def test_articles_after_an_unknown_id_is_400(api):
    response = api("GET", "/articles?after_id=42")
    assert (response.status_code, response.get_json()["field"]) == (400, "after_id")


# --- digests ------------------------------------------------------------------------------------


def test_editor_composes_a_digest_of_the_new_articles(app, api, clock):
    with app.app_context():
        older = add_article(clock, "older", hours_ago=5)
        newer = add_article(clock, "newer", hours_ago=1)
    response = api("POST", "/digests", role=Role.EDITOR)
    assert response.status_code == 201
    body = response.get_json()
    assert [a["id"] for a in body["articles"]] == [newer, older]
    assert body["subject"] == f"{app.config['SITE_NAME']}: newer and 1 more" and body["status"] == "draft"
    assert response.headers["Location"].endswith(f"/api/v1/digests/{body['id']}")
    assert api("GET", f"/digests/{body['id']}", role=Role.VIEWER).get_json() == body
    assert audit_actions(app) == [("api.digest.create", f"digest:{body['id']}")]


def test_digest_with_subject_and_since(app, api, clock):
    with app.app_context():
        add_article(clock, "older", hours_ago=5)
        newer = add_article(clock, "newer", hours_ago=1)
    since = (clock() - timedelta(hours=2)).replace(tzinfo=None).isoformat()  # no offset: UTC
    body = api("POST", "/digests", json={"subject": " Friday ", "since": since}).get_json()
    assert body["subject"] == "Friday" and [a["id"] for a in body["articles"]] == [newer]


def test_nothing_new_is_409_with_a_clear_message(app, api, clock):
    response = api("POST", "/digests", json={})
    assert response.status_code == 409
    assert response.get_json() == {"error": "No new articles: every visible article went out in an earlier digest"}
    with app.app_context():
        add_article(clock, "old", hours_ago=48)
    response = api("POST", "/digests", json={"since": "2026-11-02T00:00:00+00:00"})
    assert (response.status_code, response.get_json()) == (409, {"error": "No article was published since then."})
    assert count(app, Digest) == 0 and audit_actions(app) == []


@pytest.mark.parametrize("body, field", [
    ({"subject": "Hi\r\nBcc: all@example.com"}, "subject"), ({"subject": "x" * 201}, "subject"),
    ({"subject": 5}, "subject"), ({"since": "last friday"}, "since"), ({"since": 1700000000}, "since"),
    ({"since": "0001-01-01T00:00:00+14:00"}, "since"), (["not", "an", "object"], "body"),
])
def test_bad_digest_input_is_400_and_nothing_made(app, api, clock, body, field):
    with app.app_context():
        add_article(clock, "story")
    response = api("POST", "/digests", json=body)
    assert (response.status_code, response.get_json()["field"]) == (400, field)
    assert count(app, Digest) == 0


@pytest.fixture
def draft_id(app, api, clock):
    with app.app_context():
        for i in range(3):
            add_subscriber(clock, f"reader{i}@example.com")
        add_subscriber(clock, "pending@example.com", status=SubscriberStatus.PENDING)
        add_article(clock, "story")
    return api("POST", "/digests").get_json()["id"]


def test_send_answers_202_with_the_status_and_a_second_send_is_409(app, api, draft_id):
    response = api("POST", f"/digests/{draft_id}/send", role=Role.EDITOR)
    assert response.status_code == 202
    assert response.get_json() == {"status": "sending", "total": 3, "pending": 3, "sent": 0, "deferred": 0,
                                   "failed": 0, "skipped": 0}
    again = api("POST", f"/digests/{draft_id}/send")
    assert again.status_code == 409
    assert again.get_json() == {"error": f"Digest {draft_id} is sending; only a draft can be sent."}
    assert count(app, Delivery) == 3
    assert audit_actions(app)[-1] == ("api.digest.send", f"digest:{draft_id}")


def test_status_is_exactly_the_contract(app, api, clock, draft_id):
    draft = api("GET", f"/digests/{draft_id}/status", role=Role.VIEWER).get_json()
    assert draft == {"status": "draft", "total": 0, "pending": 0, "sent": 0, "deferred": 0, "failed": 0, "skipped": 0}
    api("POST", f"/digests/{draft_id}/send")
    with app.app_context():
        delivery.cancel(draft_id, clock())
        expected = delivery.status(draft_id)
    status = api("GET", f"/digests/{draft_id}/status").get_json()
    assert set(status) == STATUS_KEYS and status == expected
    assert (status["status"], status["skipped"], status["total"]) == ("cancelled", 3, 3)


def test_pause_resume_cancel_follow_the_digest_state_machine(app, api, draft_id):
    def control(action):
        response = api("POST", f"/digests/{draft_id}/{action}", role=Role.EDITOR)
        return response.status_code, response.get_json().get("status")

    assert control("pause")[0] == 409  # a draft is not being sent
    assert control("resume")[0] == 409
    api("POST", f"/digests/{draft_id}/send")
    assert control("pause") == (200, "paused")
    paused_again = api("POST", f"/digests/{draft_id}/pause")
    assert (paused_again.status_code, paused_again.get_json()) == (
        409, {"error": f"Digest {draft_id} is paused; it must be sending."})
    assert control("resume") == (200, "sending")
    assert control("cancel") == (200, "cancelled")
    assert control("resume")[0] == 409 and control("cancel")[0] == 409
    assert [action for action, _ in audit_actions(app)] == [
        "api.digest.create", "api.digest.send", "api.digest.pause", "api.digest.resume", "api.digest.cancel"]


def test_a_draft_may_be_cancelled(app, api, draft_id):
    assert api("POST", f"/digests/{draft_id}/cancel").get_json()["status"] == "cancelled"
    assert api("POST", f"/digests/{draft_id}/send").status_code == 409


# --- the description ----------------------------------------------------------------------------


def test_openapi_document_is_public(client):
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200 and response.get_json()["openapi"] == "3.1.0"
