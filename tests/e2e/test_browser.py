"""End to end in a real browser: the whole dev stack (`flask --app wsgi dev`) driven by chromium.

One dev stack (web + Celery worker + Celery beat + the local SMTP sink) runs for the module, in its
own instance directory, on free ports. Nothing is mocked: the form is filled in and sent by
chromium, the confirmation email goes through the broker, the worker and SMTP into the dev mail
viewer, and the confirm link is clicked there.
"""

from __future__ import annotations

import json
import time
import uuid

import pytest

from .browser import MAIL_TIMEOUT, SIGNUP_MIN_SECONDS

try:
    from playwright.sync_api import expect
except ImportError:  # pragma: no cover - the dev requirements install it
    expect = None

pytestmark = pytest.mark.browser

# --- what a person does --------------------------------------------------------------------

def unique_address(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:12]}@example.org"


def open_form(page) -> float:
    """Open /subscribe; return when the form was served (for the time trap)."""
    response = page.goto("/subscribe")
    served_at = time.monotonic()  # the page is here, so its form token was signed before now
    assert response.status == 200
    expect(page.locator("form.signup")).to_be_visible()
    return served_at


def wait_out_time_trap(served_at: float) -> None:
    """A person takes a moment to fill in the form; a faster submit is refused as a bot."""
    # The server measures from when it signed the form token: before served_at, however slow the page.
    remaining = served_at + SIGNUP_MIN_SECONDS + 0.2 - time.monotonic()
    if remaining > 0:
        time.sleep(remaining)


def submit(page):
    """Click "Sign up"; return the response to the form's POST."""
    with page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith("/subscribe")) as post:
        page.get_by_role("button", name="Sign up").click()
    page.wait_for_load_state()
    return post.value


def sign_up(page, email: str, *, consent: bool):
    served_at = open_form(page)
    page.fill("#email", email)
    if consent:
        page.check("#consent")
    expect(page.locator("#consent")).to_be_checked(checked=consent)
    wait_out_time_trap(served_at)
    return submit(page)


def mail_link_for(page, email: str):
    return page.locator("table.mail-list tr", has_text=email).locator("a.mail-link")


def wait_for_mail(page, email: str, timeout=MAIL_TIMEOUT):
    """Reload the dev mail viewer until a message to email is listed; return its link."""
    deadline = time.monotonic() + timeout
    while True:
        response = page.goto("/dev/mail/")
        assert response.status == 200
        link = mail_link_for(page, email)
        if link.count():
            return link
        if time.monotonic() > deadline:
            pytest.fail(f"no mail to {email} in the dev mail viewer after {timeout}s")
        time.sleep(0.5)


def consent_record(dev_stack, email: str) -> dict:
    result = dev_stack.flask("subscribers", "consent", email)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


# --- the tests -----------------------------------------------------------------------------

def test_signup_confirmation_email_and_confirm_click(page, dev_stack):
    email = unique_address("browser")

    post = sign_up(page, email, consent=True)
    assert post.status == 303, post.text()
    expect(page.locator("#check-email")).to_be_visible()
    expect(page.locator("h1")).to_have_text("Check your inbox")

    link = wait_for_mail(page, email)
    expect(link).to_have_count(1)
    link.click()
    expect(page.locator("table.headers")).to_contain_text(email)

    confirm_url = page.locator("a.mail-url", has_text="/confirm/")
    expect(confirm_url).to_have_count(1)
    assert confirm_url.get_attribute("href").startswith(f"{dev_stack.base_url}/confirm/")
    confirm_url.click()

    # Following the link changes nothing yet (link scanners follow GETs): it shows a button.
    expect(page.locator("#confirm-button")).to_be_visible()
    expect(page.locator("main")).to_contain_text(email)
    assert consent_record(dev_stack, email)["status"] == "pending"

    page.locator("#confirm-button").click()
    expect(page.locator("#confirmed")).to_be_visible()

    record = consent_record(dev_stack, email)
    assert record["email"] == email
    assert record["status"] == "confirmed"
    assert record["confirmed_at"]
    assert [event["kind"] for event in record["events"]] == ["requested", "confirmed"]
    requested, confirmed = record["events"]
    assert requested["checkbox_value"] == "yes"
    assert requested["terms_version"] == 1 and requested["terms_sha256"]
    assert requested["source"].startswith("subscribe:")
    assert "Chrome" in (requested["user_agent"] or "")
    assert confirmed["source"] == "confirm-link"


def test_unticked_consent_is_refused_and_sends_nothing(page, dev_stack):
    email = unique_address("no-consent")

    post = sign_up(page, email, consent=False)
    assert post.status == 400
    error = page.locator("#consent-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("tick the box")
    expect(page.locator("#check-email")).to_have_count(0)
    expect(page.locator("#form-error")).to_have_count(0)  # refused for consent, not the time trap
    expect(page.locator("#email")).to_have_value(email)  # what was typed is kept
    expect(page.locator("#consent")).not_to_be_checked()

    # Nothing was recorded, so nothing can be sent.
    result = dev_stack.flask("subscribers", "consent", email)
    assert result.returncode != 0
    assert "No subscriber" in result.stderr

    # A barrier: a signup sent after the refused one goes through the same queue and worker, so
    # once its mail is in the viewer, mail for the refused address would have arrived too.
    control = unique_address("control")
    assert sign_up(page, control, consent=True).status == 303
    wait_for_mail(page, control)
    expect(mail_link_for(page, email)).to_have_count(0)
    expect(page.locator("table.mail-list")).not_to_contain_text(email)
