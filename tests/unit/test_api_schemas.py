"""The API's shapes are declared once: requests are checked with them, in the words of the rules
every other way in uses, and the OpenAPI document's components.schemas are generated from them."""

from __future__ import annotations

import pytest

from newsletter.errors import InvalidInput
from newsletter.services import subscriptions
from newsletter.views.api import parsing, schemas
from newsletter.views.api.openapi import openapi_document

PERSON = {"email": "ada@example.com", "consent": True, "consent_source": "paper form"}


def refs(node):
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


def test_every_shape_is_a_component_and_every_reference_resolves():
    document = openapi_document()
    components = document["components"]
    assert {shape.__name__ for shape in schemas.REQUESTS + schemas.ANSWERS} <= set(components["schemas"])
    for ref in set(refs(document)):
        section, name = ref.removeprefix("#/components/").split("/")
        assert name in components[section], ref
    assert not any("title" in schema for schema in components["schemas"].values())


def test_request_limits_in_the_document_are_the_ones_checked():
    signup = openapi_document()["components"]["schemas"]["Signup"]["properties"]
    assert signup["email"]["maxLength"] == schemas.MAX_EMAIL_LENGTH
    too_long = "a" * schemas.MAX_EMAIL_LENGTH + "@example.com"
    with pytest.raises(InvalidInput) as refused:
        parsing.body(schemas.Signup, {"email": too_long, "consent": True})
    assert refused.value.field == "email"


@pytest.mark.parametrize("shape, data, field, message", [
    (schemas.Signup, {"consent": True}, "email", "Please enter your email address."),
    (schemas.Signup, {"email": "ada@example.com"}, "consent", subscriptions.CONSENT_REQUIRED),
    (schemas.Signup, {"email": "ada@example.com", "consent": True, "terms_version": float("inf")},
     "terms_version", schemas.UNKNOWN_TERMS),
    (schemas.NewSubscriber, {**PERSON, "consent": "no"}, "consent", schemas.OPERATOR_CONSENT_REQUIRED),
    (schemas.NewSubscriber, {**PERSON, "name": 5}, "name", "The name must be text."),
    (schemas.NewSubscriber, {**PERSON, "email": None}, "email", "Please enter your email address."),
    (schemas.NewDigest, {"subject": 5}, "subject", "subject must be a string."),
    (schemas.NewDigest, {"subject": "x" * 201}, "subject", "The subject is too long (at most 200 characters)."),
    (schemas.NewDigest, {"since": "last friday"}, "since", "since is not an ISO 8601 date-time: 'last friday'."),
])
def test_a_bad_field_is_refused_in_the_words_of_its_rule(shape, data, field, message):
    with pytest.raises(InvalidInput) as refused:
        parsing.body(shape, data)
    assert (refused.value.field, refused.value.message) == (field, message)


def test_the_honeypot_is_checked_before_anything_else_as_it_always_was():
    with pytest.raises(InvalidInput) as refused:
        parsing.body(schemas.Signup, {"website": "http://spam.example", "email": "not an address"})
    assert refused.value.field == "form" and "robots" in refused.value.message


def test_checked_values_are_the_cleaned_ones_and_consent_stays_as_sent():
    person = parsing.body(schemas.NewSubscriber, {"email": " Ada@Example.COM ", "consent": "Yes", "name": "  Ada ",
                                                  "consent_source": " a reply by letter "})
    assert (person.email, person.name, person.consent, person.consent_source) == (
        "ada@example.com", "Ada", "Yes", "a reply by letter")  # the ledger records the raw "Yes"
    signup = parsing.body(schemas.Signup, {"email": "ada@example.com", "consent": True, "terms_version": "2"})
    assert signup.terms_version == 2 and "terms_version" in signup.model_fields_set
    without = parsing.body(schemas.Signup, {"email": "ada@example.com", "consent": True})
    assert "terms_version" not in without.model_fields_set  # then the current terms apply
