"""/api/v1 as one blueprint: unexpected failures answer JSON and roll back, HTTP errors keep their
own JSON answers, CORS stays on the signup endpoints, and every caller reads bearer tokens alike."""

from __future__ import annotations

import logging

import pytest
from flask import abort, got_request_exception
from sqlalchemy import func, select, text

from newsletter.extensions import db
from newsletter.models import Operator, Role, Subscriber, SubscriberStatus
from newsletter.services import operators
from newsletter.views.api import bp
from newsletter.views.api.blueprint import INTERNAL_ERROR

SITE_TOKEN = "site-wide-token"


@pytest.fixture
def probed_app(app, clock):
    """The app with two routes that exist only here, inside the API's blueprint (an endpoint named
    after it is the blueprint's to Flask), and a look at the session once each request is done."""
    def half_written_then_broken():
        db.session.add(Subscriber(email="half@example.com", status=SubscriberStatus.PENDING, created_at=clock()))
        db.session.flush()  # the row is in the database's transaction now
        db.session.execute(text("SELECT no_such_column FROM subscriber"))  # a real database error
        return "not reached"

    def gone():
        abort(404)

    app.add_url_rule("/api/v1/test-only/broken", endpoint=f"{bp.name}.test_only_broken",
                     view_func=half_written_then_broken, methods=["POST"])
    app.add_url_rule("/api/v1/test-only/gone", endpoint=f"{bp.name}.test_only_gone", view_func=gone)
    app.extensions["session_after_request"] = seen = []

    @app.after_request
    def look_at_the_session(response):
        # Without the rollback, SQLite would count the half-written row and PostgreSQL refuse the query.
        seen.append((db.session().in_transaction(), db.session.scalar(select(func.count()).select_from(Subscriber))))
        return response

    return app


def test_unexpected_error_answers_json_500_rolls_back_and_is_reported(probed_app, caplog):
    raised = []
    with got_request_exception.connected_to(lambda sender, exception, **extra: raised.append(exception), probed_app), \
            caplog.at_level(logging.ERROR):
        response = probed_app.test_client().post("/api/v1/test-only/broken")
    assert (response.status_code, response.get_json()) == (500, {"error": INTERNAL_ERROR})
    assert probed_app.extensions["session_after_request"] == [(False, 0)]
    with probed_app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Subscriber)) == 0
    assert len(raised) == 1 and "no_such_column" in str(raised[0])
    assert any(record.exc_info and record.exc_info[1] is raised[0] for record in caplog.records)


def test_http_errors_raised_in_an_api_view_keep_their_json_answer(probed_app):
    response = probed_app.test_client().get("/api/v1/test-only/gone")
    assert (response.status_code, response.get_json()) == (404, {"error": "Not found."})


def test_cors_is_answered_for_the_signup_endpoints_only(app, client):
    app.config["EMBED_ALLOWED_ORIGINS"] = "https://blog.example.org"
    origin = {"Origin": "https://blog.example.org"}
    preflight = client.options("/api/v1/subscribe", headers=origin)
    signup = client.post("/api/v1/subscribe", json={"email": "ada@example.com", "consent": True}, headers=origin)
    for response in (preflight, signup):
        assert response.headers["Access-Control-Allow-Origin"] == "https://blog.example.org"
    document = client.get("/api/v1/openapi.json", headers=origin)
    assert document.status_code == 200 and "Access-Control-Allow-Origin" not in document.headers
    other = client.get("/api/v1/subscribe", headers={"Origin": "https://elsewhere.example"})
    assert "Access-Control-Allow-Origin" not in other.headers


@pytest.mark.parametrize("written", ["Bearer {}", "bearer {}", "BEARER   {}  "])
def test_operator_and_site_tokens_are_read_from_the_header_alike(app, client, clock, written):
    with app.app_context():
        operator = Operator(email="editor@example.org", role=Role.EDITOR, password_hash="!", active=True,
                            failed_logins=0, created_at=clock())
        db.session.add(operator)
        db.session.commit()
        operator_token = operators.create_api_token(operator, "site", clock())[1]
    app.config["API_TOKEN"] = SITE_TOKEN
    article = {"url": "https://news.example.org/a", "title": "A"}
    listed = client.get("/api/v1/articles", headers={"Authorization": written.format(operator_token)})
    pushed = client.post("/api/v1/articles", json=article, headers={"Authorization": written.format(SITE_TOKEN)})
    assert (listed.status_code, pushed.status_code) == (200, 201)
