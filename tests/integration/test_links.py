"""Confirmation and unsubscribe links: scanner-safe GETs, expiring signed tokens, RFC 8058."""

import re
from email import message_from_string, policy

import pytest
from sqlalchemy import select

from newsletter import tokens
from newsletter.extensions import db
from newsletter.models import ConsentEvent, OutboundEmail, Subscriber, SubscriberStatus

from tests.support.forms import form_fields


def latest_email(app):
    with app.app_context():
        raw = db.session.scalars(select(OutboundEmail.message).order_by(OutboundEmail.id.desc())).first()
    return message_from_string(raw, policy=policy.default)


def link_paths(app):
    text = latest_email(app).get_body(preferencelist=("plain",)).get_content()
    confirm = re.search(r"https://news\.example\.org(/confirm/\S+)", text).group(1)
    unsubscribe = re.search(r"https://news\.example\.org(/unsubscribe/\S+)", text).group(1)
    return confirm, unsubscribe


def state(app, email="reader@example.com"):
    with app.app_context():
        row = db.session.scalar(select(Subscriber).where(Subscriber.email == email))
        return row.status, [e.kind.value for e in row.events]


def press_button(client, path):
    page = client.get(path)
    assert page.status_code == 200
    return client.post(path, data={"csrf_token": form_fields(page.get_data(as_text=True))["csrf_token"]})


@pytest.fixture
def signed_up(app, visitor):
    assert visitor.sign_up("reader@example.com").status_code == 303
    return link_paths(app)


def test_confirmation_email_is_well_formed(app, signed_up):
    message = latest_email(app)
    assert message["To"] == "reader@example.com"
    assert message["From"] == "Example News <news@news.example.org>"
    assert message["Message-ID"].endswith("@news.example.org>")
    https, mailto = [part.strip(" <>") for part in message["List-Unsubscribe"].split(",")]
    assert https.startswith("https://news.example.org/unsubscribe/")
    assert mailto.startswith("mailto:unsubscribe@news.example.org?subject=unsubscribe%20")
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message.get_body(preferencelist=("plain",)) is not None
    html = message.get_body(preferencelist=("html",)).get_content()
    assert 'href="https://news.example.org/confirm/' in html
    assert 'href="https://news.example.org/unsubscribe/' in html


def test_get_of_confirm_link_shows_a_button_and_changes_nothing(app, client, signed_up):
    confirm, _ = signed_up
    for _ in range(3):  # a link scanner may follow it several times
        page = client.get(confirm)
        assert page.status_code == 200
        assert 'id="confirm-button"' in page.get_data(as_text=True)
    assert state(app) == (SubscriberStatus.PENDING, ["requested"])


def test_post_confirms_and_records_the_event(app, client, signed_up):
    confirm, _ = signed_up
    response = press_button(client, confirm)
    assert response.status_code == 200
    assert 'id="confirmed"' in response.get_data(as_text=True)
    assert state(app) == (SubscriberStatus.CONFIRMED, ["requested", "confirmed"])


def test_confirm_post_without_csrf_token_changes_nothing(app, client, signed_up):
    confirm, _ = signed_up
    assert client.post(confirm).status_code == 400
    assert state(app) == (SubscriberStatus.PENDING, ["requested"])


def test_confirming_twice_is_harmless_and_says_so(app, client, signed_up):
    confirm, _ = signed_up
    press_button(client, confirm)
    again = client.get(confirm)
    assert again.status_code == 200
    assert "already used" in again.get_data(as_text=True)
    replay = client.post(confirm, data={"csrf_token": form_fields(client.get("/subscribe").get_data(as_text=True))["csrf_token"]})
    assert "already used" in replay.get_data(as_text=True)
    assert state(app) == (SubscriberStatus.CONFIRMED, ["requested", "confirmed"])


def test_expired_confirm_link_is_refused_with_a_clear_page(app, client, clock, signed_up):
    confirm, _ = signed_up
    clock.advance(days=7, seconds=1)
    page = client.get(confirm)
    assert page.status_code == 400
    assert "expired" in page.get_data(as_text=True)
    assert state(app) == (SubscriberStatus.PENDING, ["requested"])


def test_tampered_confirm_link_is_refused(app, client, signed_up):
    confirm, _ = signed_up
    tampered = confirm[:-3] + ("AAA" if not confirm.endswith("AAA") else "BBB")
    assert client.get(tampered).status_code == 400
    assert "not valid" in client.get(tampered).get_data(as_text=True)
    forged = tokens.make  # a token signed with another key must not work either
    with app.app_context():
        app.config["SECRET_KEY"], real = "another-key", app.config["SECRET_KEY"]
        other = forged(tokens.CONFIRM, {"s": 1, "n": "x"}, visitor_now(app))
        app.config["SECRET_KEY"] = real
    assert client.get(f"/confirm/{other}").status_code == 400
    assert state(app) == (SubscriberStatus.PENDING, ["requested"])


def visitor_now(app):
    return app.extensions["clock"]()


def test_tokens_do_not_cross_purposes(app, client, signed_up):
    confirm, unsubscribe = signed_up
    confirm_token = confirm.rsplit("/", 1)[1]
    unsubscribe_token = unsubscribe.rsplit("/", 1)[1]
    assert client.get(f"/unsubscribe/{confirm_token}").status_code == 400
    assert client.post(f"/unsubscribe/{confirm_token}", data={"List-Unsubscribe": "One-Click"}).status_code == 400
    assert client.get(f"/confirm/{unsubscribe_token}").status_code == 400
    assert state(app) == (SubscriberStatus.PENDING, ["requested"])


def test_old_confirm_link_cannot_resubscribe_after_unsubscribing(app, client, signed_up):
    confirm, unsubscribe = signed_up
    press_button(client, confirm)
    press_button(client, unsubscribe)
    page = client.get(confirm)
    assert page.status_code == 400 and "no longer valid" in page.get_data(as_text=True)
    assert state(app)[0] == SubscriberStatus.UNSUBSCRIBED


def test_get_of_unsubscribe_link_shows_a_button_and_changes_nothing(app, client, signed_up):
    _, unsubscribe = signed_up
    page = client.get(unsubscribe)
    assert page.status_code == 200 and 'id="unsubscribe-button"' in page.get_data(as_text=True)
    assert state(app) == (SubscriberStatus.PENDING, ["requested"])


def test_unsubscribe_button_needs_csrf_token(app, client, signed_up):
    _, unsubscribe = signed_up
    assert client.post(unsubscribe, data={"something": "else"}).status_code == 400
    assert state(app) == (SubscriberStatus.PENDING, ["requested"])
    response = press_button(client, unsubscribe)
    assert response.status_code == 200 and 'id="unsubscribed"' in response.get_data(as_text=True)
    assert state(app) == (SubscriberStatus.UNSUBSCRIBED, ["requested", "unsubscribed"])


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "multipart/form-data"])
def test_rfc8058_one_click_post_unsubscribes_with_200_and_no_redirect(app, client, signed_up, content_type):
    confirm, unsubscribe = signed_up
    press_button(client, confirm)
    mail_client = app.test_client()  # a mail provider: no cookies, no CSRF token
    response = mail_client.post(unsubscribe, data={"List-Unsubscribe": "One-Click"}, content_type=content_type)
    assert response.status_code == 200
    assert "Location" not in response.headers
    assert state(app) == (SubscriberStatus.UNSUBSCRIBED, ["requested", "confirmed", "unsubscribed"])
    with app.app_context():
        event = db.session.scalars(select(ConsentEvent).order_by(ConsentEvent.id.desc())).first()
        assert event.source == "one-click"
    again = mail_client.post(unsubscribe, data={"List-Unsubscribe": "One-Click"}, content_type=content_type)
    assert again.status_code == 200
    assert state(app)[1] == ["requested", "confirmed", "unsubscribed"]


def test_resubscribing_goes_through_the_whole_opt_in_again(app, client, visitor, signed_up):
    confirm, unsubscribe = signed_up
    press_button(client, confirm)
    press_button(client, unsubscribe)
    visitor.clock.advance(minutes=10)
    assert visitor.sign_up("reader@example.com").status_code == 303
    status, events = state(app)
    assert status == SubscriberStatus.PENDING
    assert events == ["requested", "confirmed", "unsubscribed", "requested"]
    new_confirm, _ = link_paths(app)
    assert new_confirm != confirm
    press_button(client, new_confirm)
    assert state(app)[0] == SubscriberStatus.CONFIRMED


def test_consent_ledger_refuses_updates(app, signed_up):
    with app.app_context():
        event = db.session.scalar(select(ConsentEvent))
        event.ip = "198.51.100.1"
        with pytest.raises(RuntimeError, match="append-only"):
            db.session.commit()
