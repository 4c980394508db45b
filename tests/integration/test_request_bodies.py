"""Request bodies: none is read past its limit (declared or chunked), and deep JSON is bad JSON.

Chunked requests are sent the way gunicorn hands them to the app: no Content-Length, and the
input marked as terminated by the server (tests/e2e/test_request_bodies.py sends them to gunicorn).
"""

from __future__ import annotations

import io

import pytest
from sqlalchemy import func, select

from newsletter.extensions import db
from newsletter.models import Article, SignupRequest, Subscriber
from newsletter.services import operators
from newsletter.views.api.limits import MAX_BODY_BYTES

from tests.support.bodies import GeneratedBody, chunked
from tests.support.forms import OPERATOR_PASSWORD, form_fields, log_in

MiB = 2**20
SITE_TOKEN = "site-token-for-the-cms"
ARTICLE = b'{"url": "https://news.example.org/a/1", "title": "Council decides"}'
DEEP = 100_000


def count(app, model) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(model))


@pytest.fixture
def site_token(app):
    app.config["API_TOKEN"] = SITE_TOKEN
    return {"Authorization": f"Bearer {SITE_TOKEN}"}


def test_the_default_limit_is_one_mebibyte(app):
    assert app.config["MAX_CONTENT_LENGTH"] == MiB


def test_a_signup_declaring_a_body_over_the_limit_is_refused_before_a_byte_is_read(app, client):
    body = GeneratedBody(50 * 10**6, b'{"email": "a@example.com", "consent": true, "name": "', b"x", b'"}')
    response = client.post("/api/v1/subscribe", input_stream=body,
                           content_type="application/json")
    assert response.status_code == 413
    assert response.json == {"error": "The request is too large (at most 1 MiB)."}
    assert body.consumed == 0
    assert count(app, SignupRequest) == count(app, Subscriber) == 0


def test_a_chunked_signup_over_the_limit_is_cut_off_at_the_limit(app, client):
    body = GeneratedBody(2 * MiB, b'{"email": "a@example.com", "consent": true, "name": "', b"x", b'"}')
    response = chunked(client, "/api/v1/subscribe", body, "application/json")
    assert response.status_code == 413 and response.json["error"].startswith("The request is too large")
    assert body.consumed <= MiB + 64 * 1024  # the limit, and at most one read beyond it
    assert count(app, SignupRequest) == count(app, Subscriber) == 0


def test_a_chunked_article_push_over_its_own_limit_is_cut_off_at_that_limit(app, client, site_token):
    body = GeneratedBody(20 * MiB, b"[" + ARTICLE + b",", b" ", ARTICLE.replace(b"/1", b"/2") + b"]")
    response = chunked(client, "/api/v1/articles", body, "application/json", headers=site_token)
    assert response.status_code == 413
    assert response.json == {"error": "The request is too large (at most 5 MiB)."}
    assert MAX_BODY_BYTES <= body.consumed <= MAX_BODY_BYTES + 64 * 1024
    assert count(app, Article) == 0


def test_articles_may_be_pushed_up_to_their_own_limit_chunked_or_not(app, client, site_token):
    # Larger than everyone else's limit, within the articles' own: accepted either way.
    body = GeneratedBody(3 * MiB, b"[" + ARTICLE + b",", b" ", ARTICLE.replace(b"/1", b"/2") + b"]")
    response = chunked(client, "/api/v1/articles", body, "application/json", headers=site_token)
    assert response.status_code == 201, response.get_data(as_text=True)[:300]
    declared = GeneratedBody(3 * MiB, b"[" + ARTICLE.replace(b"/1", b"/3") + b",", b" ", ARTICLE + b"]")
    response = client.post("/api/v1/articles", input_stream=declared,
                           content_type="application/json", headers=site_token)
    assert response.status_code == 201, response.get_data(as_text=True)[:300]
    assert count(app, Article) == 3


def test_a_form_over_the_limit_gets_a_page_not_json(app, client):
    fields = form_fields(client.get("/subscribe").get_data(as_text=True))
    body = GeneratedBody(2 * MiB, "&".join(f"{k}={v}" for k, v in fields.items()).encode() + b"&name=", b"x")
    response = client.post("/subscribe", input_stream=body,
                           content_type="application/x-www-form-urlencoded")
    assert response.status_code == 413
    assert response.mimetype == "text/html"
    assert "The request is too large (at most 1 MiB)." in response.get_data(as_text=True)
    assert count(app, SignupRequest) == 0


@pytest.mark.parametrize("nesting", [b"[" * DEEP + b"]" * DEEP, b'{"a":' * DEEP + b"1" + b"}" * DEEP])
def test_deeply_nested_json_is_a_400_json_error(app, client, site_token, nesting):
    assert len(nesting) < MiB  # within the limit: it is the parser that must cope
    signup = client.post("/api/v1/subscribe", data=nesting, content_type="application/json")
    assert signup.status_code == 400 and signup.is_json and "JSON object" in signup.json["error"]
    articles = client.post("/api/v1/articles", data=nesting, content_type="application/json", headers=site_token)
    assert articles.status_code == 400 and articles.is_json and "Send JSON" in articles.json["error"]
    assert count(app, SignupRequest) == count(app, Article) == 0


def test_the_console_csv_upload_takes_more_than_the_default_limit(app, clock):
    with app.app_context():
        operators.create_operator("admin@example.org", "admin", OPERATOR_PASSWORD, clock())
    admin = app.test_client()
    log_in(admin, "admin@example.org")
    token = form_fields(admin.get("/console/subscribers/import").get_data(as_text=True))["csrf_token"]
    rows = "".join(f"reader{n:06d}@example.com\n" for n in range(50_000))  # 1.25 MiB
    response = admin.post("/console/subscribers/import", content_type="multipart/form-data", data={
        "csrf_token": token, "consent_source": "Old list, 2025 form", "confirmed": "yes",
        "file": (io.BytesIO(("email\n" + rows).encode()), "list.csv")})
    assert len(rows) > MiB
    assert response.status_code != 413 and "too large" not in response.get_data(as_text=True)


def test_the_api_document_names_the_413_of_every_body(client):
    document = client.get("/api/v1/openapi.json").json
    bodies = [(path, operation) for path, operations in document["paths"].items()
              for operation in operations.values() if "requestBody" in operation]
    assert len(bodies) >= 4  # subscribe, subscribers, articles, digests
    for path, operation in bodies:
        too_large = operation["responses"]["413"]
        assert too_large["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}, path
        assert ("MAX_CONTENT_LENGTH" in too_large["description"]) != (path == "/api/v1/articles"), path
