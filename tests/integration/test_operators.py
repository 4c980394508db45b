"""Operators: argon2id passwords, lockout, login rate limit, sessions, API tokens, CSRF everywhere."""

import re

import pytest
from sqlalchemy import select

from newsletter.extensions import db
from newsletter.models import ApiToken, AuditEvent, Operator
from newsletter.services import operators

from tests.support.forms import form_fields

PASSWORD = "correct horse battery"


@pytest.fixture
def admin(app, clock):
    with app.app_context():
        operators.create_operator("admin@example.org", "admin", PASSWORD, clock())
    return "admin@example.org"


def log_in(client, email, password=PASSWORD, next_path=None):
    fields = form_fields(client.get("/console/login").get_data(as_text=True))
    url = "/console/login" + (f"?next={next_path}" if next_path else "")
    return client.post(url, data={"csrf_token": fields["csrf_token"], "email": email, "password": password})


def test_cli_creates_an_operator_with_an_argon2id_hash_and_the_password_from_stdin(app, runner):
    result = runner.invoke(args=["operators", "create", "Editor@Example.org", "--role", "editor"],
                           input="a-very-long-password\n")
    assert result.exit_code == 0, result.output
    with app.app_context():
        operator = db.session.scalar(select(Operator))
        assert operator.email == "editor@example.org" and operator.role.value == "editor"
        assert operator.password_hash.startswith("$argon2id$")
    short = runner.invoke(args=["operators", "create", "b@example.org", "--role", "viewer"], input="short\n")
    assert short.exit_code != 0 and "at least 12 characters" in short.output
    again = runner.invoke(args=["operators", "create", "editor@example.org", "--role", "admin"],
                          input="a-very-long-password\n")
    assert again.exit_code != 0 and "exists already" in again.output
    wrong_role = runner.invoke(args=["operators", "create", "c@example.org", "--role", "root"], input="x" * 20 + "\n")
    assert wrong_role.exit_code != 0
    assert runner.invoke(args=["operators", "create", "d@example.org", "--role", "admin", "--password", "x"]).exit_code != 0


def test_login_and_logout(app, client, admin):
    assert client.get("/console/").status_code == 302
    response = log_in(client, admin, next_path="/console/tokens")
    assert response.status_code == 302 and response.headers["Location"] == "/console/tokens"
    assert client.get("/console/").status_code == 200
    logout = client.post("/console/logout", data={"csrf_token": form_fields(
        client.get("/console/").get_data(as_text=True))["csrf_token"]})
    assert logout.status_code == 302
    assert client.get("/console/").status_code == 302


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/", "/\\evil.example", "/%0a/evil"])
def test_login_never_redirects_to_another_site(app, client, admin, target):
    response = log_in(client, admin, next_path=target)
    assert response.status_code == 302
    assert response.headers["Location"] == "/console/"


def test_repeated_failures_lock_the_account_for_a_while(app, client, admin, clock):
    for _ in range(app.config["LOGIN_MAX_FAILURES"]):
        assert "Wrong email or password" in log_in(client, admin, "wrong password!").get_data(as_text=True)
    locked = log_in(client, admin)  # the right password, during the lockout
    assert locked.status_code == 200 and "Wrong email or password" in locked.get_data(as_text=True)
    assert client.get("/console/").status_code == 302
    clock.advance(seconds=app.config["LOGIN_LOCKOUT_SECONDS"] + 1)
    assert log_in(client, admin).status_code == 302
    with app.app_context():
        actions = list(db.session.scalars(select(AuditEvent.action).order_by(AuditEvent.id)))
    assert actions.count("login.failed") == 5 and "login.locked" in actions and actions[-1] == "login"


def test_unknown_address_and_wrong_password_get_the_same_answer(app, client, admin):
    unknown = log_in(client, "nobody@example.org")
    wrong = log_in(client, admin, "not the password")
    strip = lambda r: re.sub(r'name="csrf_token" value="[^"]+"', "", r.get_data(as_text=True))  # noqa: E731
    assert (unknown.status_code, strip(unknown)) == (wrong.status_code, strip(wrong))


def test_login_is_rate_limited(app, client, admin):
    app.config["LOGIN_RATE_LIMIT"] = "3 per minute"
    for _ in range(3):
        log_in(client, "nobody@example.org")
    assert log_in(client, admin).status_code == 429


def test_a_deactivated_operator_is_logged_out_and_cannot_log_in_again(app, client, admin, clock):
    with app.app_context():
        editor_id = operators.create_operator("editor@example.org", "editor", PASSWORD, clock()).id
        admin_id = db.session.scalar(select(Operator.id).where(Operator.email == admin))
    editor = app.test_client()
    assert log_in(editor, "editor@example.org").status_code == 302
    assert editor.get("/console/").status_code == 200
    log_in(client, admin)
    token = form_fields(client.get("/console/operators").get_data(as_text=True))["csrf_token"]
    own = client.post(f"/console/operators/{admin_id}/deactivate", data={"csrf_token": token}, follow_redirects=True)
    assert "You cannot deactivate that account." in own.get_data(as_text=True)
    done = client.post(f"/console/operators/{editor_id}/deactivate", data={"csrf_token": token},
                       follow_redirects=True)
    assert "editor@example.org can no longer log in." in done.get_data(as_text=True)
    assert editor.get("/console/").status_code == 302  # the session ended with the account
    refused = log_in(editor, "editor@example.org")
    assert refused.status_code == 200 and "Wrong email or password" in refused.get_data(as_text=True)
    with app.app_context():
        assert db.session.get(Operator, editor_id).is_active is False
        assert db.session.get(Operator, admin_id).is_active is True
        assert list(db.session.scalars(select(AuditEvent.target).where(
            AuditEvent.action == "operator.deactivate"))) == [f"operator:{editor_id}"]


def test_api_token_is_shown_once_stored_hashed_and_revocable(app, client, admin):
    log_in(client, admin)
    page = client.get("/console/tokens").get_data(as_text=True)
    created = client.post("/console/tokens", data={"csrf_token": form_fields(page)["csrf_token"], "name": "CMS"})
    token = re.search(r'<code id="new-token">([^<]+)</code>', created.get_data(as_text=True)).group(1)
    with app.app_context():
        stored = db.session.scalar(select(ApiToken))
        assert token not in (stored.token_sha256, stored.prefix) and stored.token_sha256 != token
    api = app.test_client()
    assert api.get("/api/v1/subscribers", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert token not in client.get("/console/tokens").get_data(as_text=True)  # shown once only
    page = client.get("/console/tokens").get_data(as_text=True)
    client.post(f"/console/tokens/{stored.id}/revoke", data={"csrf_token": form_fields(page)["csrf_token"]})
    assert api.get("/api/v1/subscribers", headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_every_state_changing_console_route_refuses_a_request_without_csrf_token(app, client, admin):
    log_in(client, admin)
    posts = [rule for rule in app.url_map.iter_rules()
             if rule.rule.startswith("/console") and "POST" in rule.methods]
    assert len(posts) >= 15
    for rule in posts:
        url = re.sub(r"<(?:\w+:)?\w+>", "1", rule.rule)
        response = client.post(url, data={"name": "x", "email": "x@example.org", "password": PASSWORD})
        assert response.status_code == 400, (rule.rule, response.status_code)
        assert "security token" in response.get_data(as_text=True), rule.rule
    assert client.get("/console/").status_code == 200  # still logged in: nothing was logged out
