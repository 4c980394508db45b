"""Every console and API route against anonymous, viewer, editor and admin, generated from the URL
map: a route added without declaring its role fails here, and so does one that lets in too much."""

from __future__ import annotations

import re

import pytest

from newsletter import create_app
from newsletter.extensions import db
from newsletter.models import Role
from newsletter.services import operators

from tests.support.database import base_config

PASSWORD = "a-long-enough-password"
ROLES = [None, Role.VIEWER, Role.EDITOR, Role.ADMIN]
GUARDED_PREFIXES = ("/console", "/api/v1")


@pytest.fixture
def matrix_app(tmp_path, smtp, clock):
    config = base_config(tmp_path, smtp.url, f"sqlite:///{tmp_path / 'matrix.sqlite'}", clock)
    # CSRF has its own tests; here it would answer 400 before access control is even asked.
    config.update(WTF_CSRF_ENABLED=False, LOGIN_RATE_LIMIT="1000 per minute")
    app = create_app(config)
    with app.app_context():
        db.create_all()
        tokens = {}
        for role in ROLES[1:]:
            operator = operators.create_operator(f"{role.value}@example.org", role.value, PASSWORD, clock())
            tokens[role] = operators.create_api_token(operator, "matrix", clock())[1]
    app.config["MATRIX_TOKENS"] = tokens
    return app


def guarded_routes(app):
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith(GUARDED_PREFIXES):
            continue
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            yield rule, method


def url_for_rule(rule) -> str:
    # Ids that do not exist: access control must answer before anything is looked up.
    return re.sub(r"<(?:(\w+):)?(\w+)>", lambda m: "999" if m.group(1) in ("int", None) and "id" in m.group(2)
                  else ("999" if m.group(1) == "int" else "x"), rule.rule)


def client_as(app, role):
    client = app.test_client()
    if role is not None:
        response = client.post("/console/login", data={"email": f"{role.value}@example.org", "password": PASSWORD})
        assert response.status_code == 302, response.get_data(as_text=True)
    return client


def call(app, client, role, rule, method):
    headers = {}
    if rule.rule.startswith("/api/v1") and role is not None:
        headers["Authorization"] = f"Bearer {app.config['MATRIX_TOKENS'][role]}"
    kwargs = {"json": {}} if method in ("POST", "PUT", "PATCH") and rule.rule.startswith("/api/") else {}
    return client.open(url_for_rule(rule), method=method, headers=headers, **kwargs)


def test_every_guarded_route_declares_its_role(matrix_app):
    undeclared = [f"{method} {rule.rule} ({rule.endpoint})" for rule, method in guarded_routes(matrix_app)
                  if not hasattr(matrix_app.view_functions[rule.endpoint], "required_role")]
    assert undeclared == []


def test_every_route_against_every_role(matrix_app):
    clients = {role: client_as(matrix_app, role) for role in ROLES}
    checked, wrong = 0, []
    for rule, method in guarded_routes(matrix_app):
        needed = matrix_app.view_functions[rule.endpoint].required_role
        for role in ROLES:
            response = call(matrix_app, clients[role], role, rule, method)
            code = response.status_code
            if rule.endpoint == "console.logout":
                clients[role] = client_as(matrix_app, role)  # walk on as the same role
            api = rule.rule.startswith("/api/")
            if needed is None:
                allowed = code not in (401, 403)
            elif role is None:  # refused: the API says 401, the console sends to its login page
                allowed = code == 401 if api else (code == 302 and "/console/login" in response.headers["Location"])
            elif role.allows(needed):
                allowed = code not in (401, 403)
            else:
                allowed = code == 403
            checked += 1
            if not allowed:
                wrong.append(f"{method} {rule.rule} as {role.value if role else 'anonymous'} "
                             f"(needs {needed.value if needed else 'nothing'}): {code}")
    assert wrong == []
    assert checked >= 4 * 10  # the map really has routes: an empty walk proves nothing
