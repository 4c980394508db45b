"""/api/v1/openapi.json: valid OpenAPI 3.1, complete and true to the views, and schemathesis's
property-based checks against the running app (SQLite only, bounded and derandomised: about 10 s)."""

from __future__ import annotations

import jsonschema_rs
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.specs.openapi.definitions import OPENAPI_31_VALIDATOR

from newsletter import create_app
from newsletter.extensions import db
from newsletter.models import Article, Digest, DigestArticle, DigestStatus, Operator, Role, Subscriber, SubscriberStatus
from newsletter.services import operators
from newsletter.views.api.openapi import openapi_document

from tests.support.database import base_config

SEEDED_IDS = [1, 2, 3, 4, 5, 999]
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


@pytest.fixture
def sqlite_app(tmp_path, smtp, clock):
    app = create_app(base_config(tmp_path, smtp.url, f"sqlite:///{tmp_path / 'openapi.sqlite'}", clock))
    with app.app_context():
        db.create_all()
        admin = Operator(email="admin@example.org", role=Role.ADMIN, password_hash="!", active=True,
                         failed_logins=0, created_at=clock())
        db.session.add(admin)
        db.session.commit()
        app.config["TEST_ADMIN_TOKEN"] = operators.create_api_token(admin, "schemathesis", clock())[1]
        _seed(clock)
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


def _seed(clock):
    """A few of everything, with small ids: the generated requests find real rows too."""
    for i, status in enumerate(SubscriberStatus):
        db.session.add(Subscriber(email=f"reader{i}@example.com", name=f"Reader {i}", status=status,
                                  created_at=clock()))
    for i in range(3):
        db.session.add(Article(key=f"https://news.example.org/{i}", url=f"https://news.example.org/{i}",
                               title=f"Story {i}", summary_html="<p>Text.</p>", published_at=clock(),
                               created_at=clock(), updated_at=clock(), hidden=False))
    db.session.flush()
    for status in (DigestStatus.DRAFT, DigestStatus.SENDING, DigestStatus.PAUSED):
        digest = Digest(subject=f"A {status.value} digest", status=status, created_at=clock())
        digest.items = [DigestArticle(article_id=1, position=0)]
        db.session.add(digest)
    db.session.commit()


def operations(document):
    for path, item in document["paths"].items():
        for method in METHODS:
            if method in item:
                yield path, method, item[method]


# --- the document -------------------------------------------------------------------------------


def test_document_is_valid_openapi_3_1():
    document = openapi_document()
    OPENAPI_31_VALIDATOR.validate(document)  # the OpenAPI 3.1 meta-schema (raises with the reason)
    for schema in document["components"]["schemas"].values():
        jsonschema_rs.meta.validate(schema)  # and every schema in it is valid JSON Schema 2020-12
    ids = [operation["operationId"] for _, _, operation in operations(document)]
    assert len(ids) == len(set(ids))


def test_every_api_route_is_described_with_the_role_its_view_needs(sqlite_app):
    document = sqlite_app.test_client().get("/api/v1/openapi.json").get_json()
    described = {(path, method.upper()): operation for path, method, operation in operations(document)}
    routes = {}
    for rule in sqlite_app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1"):
            continue
        methods = rule.methods - {"HEAD", "OPTIONS"} or {"OPTIONS"}  # automatic OPTIONS is not an operation
        path = rule.rule.replace("<int:", "{").replace(">", "}")
        for method in methods:
            routes[(path, method)] = sqlite_app.view_functions[rule.endpoint].required_role
    assert sorted(routes) == sorted(described)
    for key, role in routes.items():
        operation = described[key]
        assert operation["x-required-role"] == (role.value if role else None), key
        if role is None:
            assert operation["security"] == [], key
        else:
            assert "security" not in operation, key  # the document's default: the bearer token
            assert {"401", "403"} <= set(operation["responses"]), key
    assert document["security"] == [{"bearerToken": []}]
    assert document["components"]["securitySchemes"]["bearerToken"] == {
        "type": "http", "scheme": "bearer", "description": "A per-operator API token (nlt_...)."}


def test_errors_share_one_schema():
    document = openapi_document()
    assert document["components"]["schemas"]["Error"] == {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "string", "description": "What went wrong, for people."},
                       "field": {"type": "string", "description": "The input at fault, when one is."}},
    }
    for path, method, operation in operations(document):
        for code, answer in operation["responses"].items():
            if code.startswith("4"):
                schema = answer.get("$ref") or answer["content"]["application/json"]["schema"]["$ref"]
                assert schema.rsplit("/", 1)[1] in ("BadRequest", "Unauthorized", "Forbidden", "NotFound",
                                                    "Conflict", "Error", "ImportRefused"), (path, method, code)


@pytest.mark.parametrize("schema_name, method, path, expected", [
    ("Signup", "POST", "/api/v1/subscribe", 202),
    ("NewSubscriber", "POST", "/api/v1/subscribers", 201),
    ("ArticleIn", "POST", "/api/v1/articles", 201),
    ("NewDigest", "POST", "/api/v1/digests", 201),  # drafts do not use articles up: each example makes one
])
def test_documented_examples_work(sqlite_app, schema_name, method, path, expected):
    schemas = openapi_document()["components"]["schemas"]
    client = sqlite_app.test_client()
    headers = {"Authorization": f"Bearer {sqlite_app.config['TEST_ADMIN_TOKEN']}"}
    for example in schemas[schema_name]["examples"]:
        assert jsonschema_rs.validator_for(schemas[schema_name]).is_valid(example)
        response = client.open(path, method=method, json=example, headers=headers)
        assert response.status_code == expected, response.get_json()


@pytest.mark.parametrize("terms_version", [2**63, "Infinity", -1, 0])
def test_public_signup_with_an_impossible_terms_version_is_400(sqlite_app, terms_version):
    # Found by the negative run below: 2**63 crashed SQLite's bind, Infinity int(). Both were 500s.
    body = f'{{"email": "ada@example.com", "consent": true, "terms_version": {terms_version}}}'
    response = sqlite_app.test_client().post("/api/v1/subscribe", data=body, content_type="application/json")
    assert response.status_code == 400
    assert response.get_json()["field"] == "terms_version"


# --- the app against its document: schemathesis -------------------------------------------------


# schemathesis' own pytest plugin (schemathesis.pytest.from_fixture) sets `Node._nodeid`, which
# pytest 9 no longer has; one pytest item per documented operation, with Hypothesis driving
# schemathesis' strategy, does the same work and reports each operation on its own.
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]


@pytest.fixture
def api_schema(sqlite_app):
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", sqlite_app)
    schema.config.update(headers={"Authorization": f"Bearer {sqlite_app.config['TEST_ADMIN_TOKEN']}"})
    return schema


def _runs():
    for path, method, operation in operations(openapi_document()):
        yield pytest.param(path, method, GenerationMode.POSITIVE, id=f"{method.upper()} {path}")
        if "parameters" in operation or "requestBody" in operation:  # something to get wrong
            yield pytest.param(path, method, GenerationMode.NEGATIVE, id=f"{method.upper()} {path} (invalid input)")


@pytest.mark.parametrize("path, method, mode", _runs())
def test_api_answers_as_documented(api_schema, path, method, mode):
    """Valid input: documented answers only, bodies matching their schemas, never a 5xx. Invalid
    input (negative mode): a documented 4xx, never a 5xx."""
    operation = api_schema[path][method.upper()]

    def cases_for(path_parameters=None):
        return operation.as_strategy(mode, path_parameters=path_parameters)

    cases = cases_for()
    if "{" in path and mode is GenerationMode.POSITIVE:
        # ids of seeded rows (and one that is not there), not only random ones that never are
        name = path.split("{", 1)[1].split("}", 1)[0]
        cases = st.sampled_from(SEEDED_IDS).flatmap(lambda i: cases_for({name: i}))

    @given(case=cases)
    # No shrinking: a failure is reported with the request that caused it (as curl), and found fast.
    @settings(max_examples=20, derandomize=True, database=None, deadline=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    def answers_as_documented(case):
        case.call_and_validate(checks=CHECKS)

    answers_as_documented()
