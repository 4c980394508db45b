"""The signup form and the JSON API: every refusal changes nothing, every answer reveals nothing."""

import pytest
from sqlalchemy import func, select

from newsletter.extensions import db
from newsletter.models import ConsentEvent, OutboundEmail, Subscriber, SubscriberStatus, UsedFormToken
from newsletter.services.terms import publish_terms, text_sha256

from tests.support.forms import form_fields


def counts(app):
    with app.app_context():
        return tuple(db.session.scalar(select(func.count()).select_from(model))
                     for model in (Subscriber, ConsentEvent, OutboundEmail))


def subscriber(app, email):
    with app.app_context():
        row = db.session.scalar(select(Subscriber).where(Subscriber.email == email))
        if row is not None:
            db.session.expunge(row)
        return row


def make_confirmed(app, email, clock):
    with app.app_context():
        row = db.session.scalar(select(Subscriber).where(Subscriber.email == email))
        row.status = SubscriberStatus.CONFIRMED
        row.confirmed_at = clock()
        db.session.commit()


def test_form_has_unticked_consent_terms_csrf_honeypot_and_time_trap(client):
    html = client.get("/subscribe").get_data(as_text=True)
    assert 'type="checkbox" id="consent" name="consent" value="yes">' in html  # no `checked`
    assert "checked" not in html
    assert 'name="csrf_token"' in html
    assert 'name="form_token"' in html
    assert 'name="website"' in html
    assert "I agree to receive the newsletter by email" in html  # the terms text itself
    assert client.get("/").status_code == 200
    assert 'href="/subscribe"' in client.get("/").get_data(as_text=True)


def test_signup_records_pending_subscriber_consent_and_confirmation_email(app, visitor):
    response = visitor.sign_up("Reader@Example.COM", name="Ada Reader",
                               environ_base={"REMOTE_ADDR": "203.0.113.7"})
    assert response.status_code == 303
    assert response.headers["Location"].endswith("/subscribe/check-your-email")
    with app.app_context():
        row = db.session.scalar(select(Subscriber))
        assert (row.email, row.name, row.status) == ("reader@example.com", "Ada Reader", SubscriberStatus.PENDING)
        event = row.events[0]
        assert event.kind.value == "requested"
        assert event.checkbox_value == "yes"
        assert event.terms.version == 1
        assert event.terms_sha256 == text_sha256(event.terms.text)
        assert event.source.startswith("subscribe: ")
        assert event.user_agent
        outbound = db.session.scalar(select(OutboundEmail))
        assert outbound.recipient == "reader@example.com" and outbound.status.value == "pending"
        assert "/confirm/" in outbound.message


@pytest.mark.parametrize("consent", [None, "", "off", "0", "false", "no", "OFF", "No", "False", "nope"])
def test_consent_that_is_not_a_real_yes_is_refused_and_nothing_stored(app, visitor, consent):
    response = visitor.sign_up("someone@example.com", consent=consent)
    assert response.status_code == 400
    assert "tick the box" in response.get_data(as_text=True)
    assert 'id="consent-error"' in response.get_data(as_text=True)
    assert counts(app) == (0, 0, 0)


@pytest.mark.parametrize("consent", [None, False, "off", "0", "false", "no", 0, 1, "maybe"])
def test_api_refuses_consent_that_is_not_a_real_yes(app, client, consent):
    body = {"email": "someone@example.com"}
    if consent is not None:
        body["consent"] = consent
    response = client.post("/api/v1/subscribe", json=body)
    assert response.status_code == 400
    assert response.json["field"] == "consent" and "tick the box" in response.json["error"]
    assert counts(app) == (0, 0, 0)


def test_answers_are_identical_for_new_pending_and_confirmed_addresses(app, visitor, client, clock):
    first = visitor.sign_up("known@example.com")
    clock.advance(minutes=1)
    pending = visitor.sign_up("known@example.com")
    new = visitor.sign_up("fresh@example.com")
    make_confirmed(app, "known@example.com", clock)
    confirmed = visitor.sign_up("known@example.com")
    answers = {(r.status_code, r.headers["Location"], r.get_data()) for r in (first, pending, new, confirmed)}
    assert len(answers) == 1

    api = [client.post("/api/v1/subscribe", json={"email": e, "consent": True})
           for e in ("known@example.com", "fresh@example.com", "api-new@example.com")]
    assert len({(r.status_code, r.get_data()) for r in api}) == 1
    assert api[0].status_code == 202


def test_signup_tells_its_caller_what_it_did_and_the_public_the_same_thing_each_time(app, visitor, client, clock):
    from newsletter.services.subscriptions import Context, SignupOutcome, request_signup
    from newsletter.services.suppression import suppress
    from newsletter.services.terms import current_terms

    def outcome(email):
        with app.app_context():
            return request_signup(email, None, "yes", current_terms(clock()), Context(None, None, "test"), clock())

    def unsubscribe(email):
        with app.app_context():
            row = db.session.scalar(select(Subscriber).where(Subscriber.email == email))
            row.status = SubscriberStatus.UNSUBSCRIBED
            db.session.commit()

    with app.app_context():
        suppress("gone@example.com", "hard-bounce", clock())
        db.session.commit()
    assert outcome("Ada@Example.com") is SignupOutcome.CREATED
    assert outcome("ada@example.com") is SignupOutcome.RESTARTED  # still pending
    make_confirmed(app, "ada@example.com", clock)
    assert outcome("ada@example.com") is SignupOutcome.UNCHANGED
    unsubscribe("ada@example.com")
    assert outcome("ada@example.com") is SignupOutcome.RESTARTED
    assert outcome("gone@example.com") is SignupOutcome.SUPPRESSED

    # The same five situations through the form and the API: one answer for all.
    forms, apis = [], []
    for email, afterwards in [
        ("bo@example.com", None),  # created
        ("bo@example.com", lambda: make_confirmed(app, "bo@example.com", clock)),  # restarted while pending
        ("bo@example.com", lambda: unsubscribe("bo@example.com")),  # unchanged: confirmed
        ("bo@example.com", None),  # restarted after unsubscribing
        ("gone@example.com", None),  # suppressed
    ]:
        forms.append(visitor.sign_up(email))
        apis.append(client.post("/api/v1/subscribe", json={"email": email, "consent": True}))
        if afterwards:
            afterwards()
    assert len({(r.status_code, r.headers["Location"], r.get_data()) for r in forms}) == 1
    assert len({(r.status_code, r.get_data()) for r in apis}) == 1


def test_confirmed_address_gets_no_new_mail_and_nothing_changes(app, visitor, clock):
    visitor.sign_up("known@example.com")
    make_confirmed(app, "known@example.com", clock)
    before = counts(app)
    clock.advance(hours=2)
    visitor.sign_up("known@example.com", name="Someone Else")
    assert counts(app) == before
    assert subscriber(app, "known@example.com").name is None


def test_suppressed_address_gets_the_same_answer_and_no_mail(app, visitor, clock):
    from newsletter.services.suppression import suppress

    with app.app_context():
        suppress("bounced@example.com", "hard-bounce", clock())
        db.session.commit()
    other = visitor.sign_up("someone-new@example.com")
    response = visitor.sign_up("Bounced@Example.com")
    assert (response.status_code, response.headers["Location"]) == (other.status_code, other.headers["Location"])
    assert subscriber(app, "bounced@example.com") is None
    assert counts(app) == (1, 1, 1)


def test_pending_address_gets_its_confirmation_again_at_most_once_per_interval(app, visitor, clock):
    visitor.sign_up("pending@example.com")
    clock.advance(minutes=1)
    visitor.sign_up("pending@example.com")
    assert counts(app) == (1, 2, 1)  # the second consent is recorded, no second email
    clock.advance(minutes=5)
    visitor.sign_up("pending@example.com")
    assert counts(app) == (1, 3, 2)


def test_missing_csrf_token_is_refused_and_nothing_stored(app, visitor):
    fields = visitor.load()
    visitor.clock.advance(seconds=5)
    del fields["csrf_token"]
    response = visitor.client.post("/subscribe", data={**fields, "email": "a@example.com", "consent": "yes"})
    assert response.status_code == 400
    assert "security token" in response.get_data(as_text=True)
    assert counts(app) == (0, 0, 0)


def test_filled_honeypot_is_refused_and_nothing_stored(app, visitor, client):
    response = visitor.sign_up("bot@example.com", website="http://spam.example")
    assert response.status_code == 400
    assert "catch robots" in response.get_data(as_text=True)
    api = client.post("/api/v1/subscribe", json={"email": "bot@example.com", "consent": True, "website": "x"})
    assert api.status_code == 400
    assert counts(app) == (0, 0, 0)


def test_time_trap_refuses_a_form_sent_faster_than_a_person_can(app, visitor):
    response = visitor.sign_up("fast@example.com", wait=1)
    assert response.status_code == 400
    assert "very fast" in response.get_data(as_text=True)
    assert counts(app) == (0, 0, 0)
    assert visitor.sign_up("fast@example.com", wait=2).status_code == 303


def test_time_trap_counts_fractions_of_a_second(app, visitor, clock):
    clock.advance(seconds=0.99)  # served at 09:00:00.99, sent back 1.02 s later
    assert visitor.sign_up("fast@example.com", wait=1.02).status_code == 400
    assert counts(app) == (0, 0, 0)


@pytest.mark.parametrize("token", ["", "forged.token.value"])
def test_missing_or_forged_form_token_is_refused(app, visitor, token):
    fields = visitor.load()
    visitor.clock.advance(seconds=5)
    response = visitor.client.post("/subscribe", data={**fields, "form_token": token,
                                                       "email": "a@example.com", "consent": "yes"})
    assert response.status_code == 400
    assert counts(app) == (0, 0, 0)


def test_stale_form_is_refused(app, visitor):
    response = visitor.sign_up("slow@example.com", wait=2 * 86400)
    assert response.status_code == 400
    assert "expired" in response.get_data(as_text=True)
    assert counts(app) == (0, 0, 0)


def test_rate_limit_answers_429_and_stores_nothing(tmp_path, smtp, clock):
    from newsletter import create_app

    from tests.support.forms import Visitor
    from tests.support.database import base_config
    from tests.support.signups import with_signup_worker

    config = base_config(tmp_path, smtp.url, f"sqlite:///{tmp_path / 'rl.sqlite'}", clock)
    config["SIGNUP_RATE_LIMIT"] = "2 per minute"
    app = with_signup_worker(create_app(config))
    with app.app_context():
        db.create_all()
    visitor = Visitor(app.test_client(), clock)
    assert visitor.sign_up("one@example.com").status_code == 303
    assert visitor.sign_up("two@example.com").status_code == 303
    refused = visitor.sign_up("three@example.com")
    assert refused.status_code == 429
    assert "Too many requests" in refused.get_data(as_text=True)
    api = app.test_client().post("/api/v1/subscribe", json={"email": "four@example.com", "consent": True})
    assert api.status_code == 429 and "Too many requests" in api.json["error"]
    assert counts(app)[0] == 2
    assert subscriber(app, "three@example.com") is None


@pytest.mark.parametrize("field,value", [
    ("email", "a@example.com\r\nBcc: victim@example.com"),
    ("email", "a@example.com\n"),
    ("name", "Ada\r\nBcc: victim@example.com"),
    ("name", "Ada\nReader"),
])
def test_line_breaks_in_any_field_are_refused(app, visitor, client, field, value):
    values = {"email": "a@example.com", "name": "Ada", field: value}
    response = visitor.sign_up(values.pop("email"), **values)
    assert response.status_code == 400
    assert "Line breaks" in response.get_data(as_text=True)
    api = client.post("/api/v1/subscribe", json={"email": "a@example.com", "name": "Ada", field: value,
                                                 "consent": True})
    assert api.status_code == 400 and api.json["field"] == field
    assert counts(app) == (0, 0, 0)


@pytest.mark.parametrize("email,reason", [
    ("not-an-email", "not valid"),
    ("a@b", "not valid"),
    ("", "enter your email"),
    ("x" * 250 + "@example.com", "too long"),
    ("josé@example.com", "not valid"),  # needs SMTPUTF8, which relays need not offer
])
def test_invalid_or_overlong_email_is_refused(app, visitor, email, reason):
    response = visitor.sign_up(email)
    assert response.status_code == 400
    assert reason in response.get_data(as_text=True)
    assert counts(app) == (0, 0, 0)


def test_internationalised_domain_is_stored_in_ascii_form(app, visitor):
    assert visitor.sign_up("Leser@Bücher.example").status_code == 303
    assert subscriber(app, "leser@xn--bcher-kva.example") is not None


def test_overlong_name_is_refused(app, visitor):
    assert visitor.sign_up("a@example.com", name="n" * 101).status_code == 400
    assert counts(app) == (0, 0, 0)


def test_api_rejects_what_is_not_a_json_object(app, client):
    assert client.post("/api/v1/subscribe", data="email=a@example.com").status_code == 400
    assert client.post("/api/v1/subscribe", json=["a@example.com"]).status_code == 400
    assert counts(app) == (0, 0, 0)


def test_api_signup_records_consent_with_its_source(app, client):
    response = client.post("/api/v1/subscribe", headers={"User-Agent": "NewsSite/1.0"},
                           json={"email": "api@example.com", "name": "Api", "consent": True,
                                 "source": "https://news.example.org/articles/1"})
    assert response.status_code == 202
    with app.app_context():
        event = db.session.scalar(select(ConsentEvent))
        assert event.source == "api: https://news.example.org/articles/1"
        assert event.user_agent == "NewsSite/1.0"
        assert event.checkbox_value == "true"


def test_consent_records_the_terms_version_the_form_showed(app, visitor, clock):
    fields = visitor.load()
    with app.app_context():
        publish_terms("Version two of the terms.", clock())
    clock.advance(seconds=5)
    visitor.client.post("/subscribe", data={**fields, "email": "a@example.com", "consent": "yes"})
    with app.app_context():
        event = db.session.scalar(select(ConsentEvent))
        assert event.terms.version == 1  # what was on the screen, not what is current now
        assert event.terms_sha256 == text_sha256(event.terms.text)
    assert "Version two of the terms." in visitor.client.get("/subscribe").get_data(as_text=True)


def test_embed_form_works_without_session_cookie_and_may_be_framed(app, client, clock):
    from tests.support.forms import form_fields

    page = client.get("/embed")
    assert "frame-ancestors *" in page.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in client.get("/subscribe").headers["Content-Security-Policy"]
    fields = form_fields(page.get_data(as_text=True))
    assert "csrf_token" not in fields
    clock.advance(seconds=5)
    client.delete_cookie("session")
    response = client.post("/embed", data={**fields, "email": "embed@example.com", "consent": "on"})
    assert response.status_code == 303
    assert response.headers["Location"].endswith("/embed/check-your-email")
    assert counts(app) == (1, 1, 1)


def test_a_served_form_signs_up_one_address_only(app, visitor):
    fields = visitor.load()
    visitor.clock.advance(seconds=5)
    first = visitor.client.post("/subscribe", data={**fields, "email": "one@example.com", "consent": "yes"})
    assert first.status_code == 303
    for email in ("two@example.com", "one@example.com"):
        again = visitor.client.post("/subscribe", data={**fields, "email": email, "consent": "yes"})
        assert again.status_code == 400
        assert "This form has expired or was altered" in again.get_data(as_text=True)  # as for a stale form
    assert counts(app) == (1, 1, 1)


def test_a_refused_form_comes_back_with_a_fresh_token_that_works(app, visitor):
    fields = visitor.load()
    visitor.clock.advance(seconds=5)
    refused = visitor.client.post("/subscribe", data={**fields, "email": "late@example.com"})  # no consent
    assert refused.status_code == 400 and "tick the box" in refused.get_data(as_text=True)
    fresh = form_fields(refused.get_data(as_text=True))
    assert fresh["form_token"] != fields["form_token"]
    visitor.clock.advance(seconds=5)  # the visitor ticks the box and sends it again
    corrected = visitor.client.post("/subscribe", data={**fresh, "email": "late@example.com", "consent": "yes"})
    assert corrected.status_code == 303
    assert counts(app) == (1, 1, 1)
    stale = visitor.client.post("/subscribe", data={**fields, "email": "late@example.com", "consent": "yes"})
    assert stale.status_code == 400 and counts(app) == (1, 1, 1)


def test_the_embed_form_token_is_single_use_too(app, client, clock):
    fields = form_fields(client.get("/embed").get_data(as_text=True))
    clock.advance(seconds=5)
    assert client.post("/embed", data={**fields, "email": "a@example.com", "consent": "on"}).status_code == 303
    again = client.post("/embed", data={**fields, "email": "b@example.com", "consent": "on"})
    assert again.status_code == 400 and "expired" in again.get_data(as_text=True)
    assert counts(app) == (1, 1, 1)


def test_spent_form_tokens_are_forgotten_once_they_would_be_refused_anyway(app, visitor, clock):
    visitor.sign_up("first@example.com")
    clock.advance(seconds=app.config["SIGNUP_FORM_MAX_AGE"] + 10)
    visitor.sign_up("second@example.com")
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(UsedFormToken)) == 1
