"""Operators: argon2id passwords, lockout, login rate limit, sessions, API tokens, CSRF everywhere."""

import re

import pytest
from argon2 import PasswordHasher
from sqlalchemy import select

from newsletter.errors import InvalidInput
from newsletter.extensions import db
from newsletter.models import ApiToken, AuditEvent, Operator
from newsletter.services import operators

from tests.support.concurrency import run_at_once
from tests.support.database import postgres_only
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


# --- login timing and the failure counter --------------------------------------------------------


class CountingHasher(PasswordHasher):
    """The real argon2id hasher, keeping the hash of every verification it ran."""

    def __init__(self):
        super().__init__()
        self.checked: list[str] = []

    def verify(self, hash, password):
        self.checked.append(hash)
        return super().verify(hash, password)


@pytest.fixture
def hasher(monkeypatch):
    counting = CountingHasher()
    monkeypatch.setattr(operators, "_hasher", counting)
    return counting


def password_hash(app, email):
    with app.app_context():
        return db.session.scalar(select(Operator.password_hash).where(Operator.email == email))


def test_unknown_locked_and_wrong_logins_all_run_one_password_verification(app, admin, hasher, clock):
    real = password_hash(app, admin)
    with app.app_context():
        for email in ("nobody@example.org", "not an address"):
            with pytest.raises(operators.LoginRefused):
                operators.authenticate(email, PASSWORD, None, clock())
        assert len(hasher.checked) == 2 and real not in hasher.checked  # a dummy hash, same work
        for _ in range(app.config["LOGIN_MAX_FAILURES"]):
            with pytest.raises(operators.LoginRefused):
                operators.authenticate(admin, "wrong password!", None, clock())
        assert hasher.checked[2:] == [real] * app.config["LOGIN_MAX_FAILURES"]
        hasher.checked.clear()
        with pytest.raises(operators.LoginRefused):
            operators.authenticate(admin, PASSWORD, None, clock())  # locked: the right password changes nothing
        assert len(hasher.checked) == 1 and hasher.checked != [real]


@postgres_only
def test_parallel_wrong_passwords_get_no_more_checks_than_the_limit(app, admin, hasher, clock):
    attempts = 10
    limit = app.config["LOGIN_MAX_FAILURES"]
    real = password_hash(app, admin)

    def wrong_password(index):
        with app.app_context():
            try:
                operators.authenticate(admin, f"wrong password {index}", "198.51.100.1", clock())
            except operators.LoginRefused:
                return "refused"
            return "logged in"

    assert run_at_once(attempts, wrong_password) == ["refused"] * attempts
    assert len(hasher.checked) == attempts  # every attempt did the same argon2 work
    assert 1 <= hasher.checked.count(real) <= limit
    with app.app_context():
        operator = db.session.scalar(select(Operator))
        assert operator.failed_logins == attempts and operator.locked_until > clock()
        actions = list(db.session.scalars(select(AuditEvent.action)))
    assert actions.count("login.failed") == hasher.checked.count(real)
    assert actions.count("login.locked") == attempts - hasher.checked.count(real)


def test_a_success_before_the_limit_starts_the_count_again(app, client, admin):
    limit = app.config["LOGIN_MAX_FAILURES"]
    for _ in range(limit - 1):
        log_in(client, admin, "wrong password!")
    assert log_in(client, admin).status_code == 302
    with app.app_context():
        assert db.session.scalar(select(Operator.failed_logins)) == 0
    for _ in range(limit - 1):
        log_in(client, admin, "wrong password!")
    assert log_in(app.test_client(), admin).status_code == 302  # not locked: the count started again


# --- sessions end with logout, a new password, deactivation --------------------------------------


def csrf_token(client, path="/console/"):
    return form_fields(client.get(path).get_data(as_text=True))["csrf_token"]


def copied_session(app, client):
    """A second browser holding a copy of client's session cookie."""
    thief = app.test_client()
    thief.set_cookie("session", client.get_cookie("session").value)
    return thief


def test_a_cookie_copied_before_logout_opens_nothing_after_it(app, client, admin):
    log_in(client, admin)
    thief = copied_session(app, client)
    assert thief.get("/console/").status_code == 200  # the copy works while the session lives
    assert client.post("/console/logout", data={"csrf_token": csrf_token(client)}).status_code == 302
    refused = thief.get("/console/")
    assert refused.status_code == 302 and refused.headers["Location"].startswith("/console/login")
    assert log_in(client, admin).status_code == 302 and client.get("/console/").status_code == 200
    assert thief.get("/console/").status_code == 302
    with app.app_context():
        assert "logout" in list(db.session.scalars(select(AuditEvent.action)))


def test_a_new_password_ends_every_session(app, client, admin, clock):
    log_in(client, admin)
    with app.app_context():
        operator = db.session.scalar(select(Operator))
        operators.change_password(operator, "a brand new password", clock())
    assert client.get("/console/").status_code == 302
    assert log_in(client, admin).status_code == 200  # the old password is gone
    assert log_in(client, admin, "a brand new password").status_code == 302
    with app.app_context(), pytest.raises(InvalidInput):
        operators.change_password(db.session.scalar(select(Operator)), "short", clock())


def test_deactivation_ends_the_sessions_of_that_operator(app, client, admin, clock):
    with app.app_context():
        operators.create_operator("editor@example.org", "editor", PASSWORD, clock())
    editor = app.test_client()
    log_in(editor, "editor@example.org")
    assert editor.get("/console/").status_code == 200
    log_in(client, admin)
    with app.app_context():
        editor_id = db.session.scalar(select(Operator.id).where(Operator.email == "editor@example.org"))
    client.post(f"/console/operators/{editor_id}/deactivate",
                data={"csrf_token": csrf_token(client, "/console/operators")})
    assert editor.get("/console/").status_code == 302
    with app.app_context():
        assert db.session.get(Operator, editor_id).session_version == 1


def test_a_session_without_a_version_opens_nothing(app, client, admin):
    log_in(client, admin)
    with client.session_transaction() as session:
        session["_user_id"] = session["_user_id"].partition(":")[0]  # a cookie from before versions
    assert client.get("/console/").status_code == 302
