"""End to end in a real browser: the whole dev stack (`flask --app wsgi dev`) driven by chromium.

One dev stack (web + Celery worker + Celery beat + the local SMTP sink) runs for the module, in its
own instance directory, on free ports. Nothing is mocked: the form is filled in and sent by
chromium, the confirmation email goes through the broker, the worker and SMTP into the dev mail
viewer, and the confirm link is clicked there.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
import warnings
from pathlib import Path

import pytest

from config import PROJECT_DIR
from tests.conftest import require

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # pragma: no cover - the dev requirements install it
    sync_playwright = None

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-gpu",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SIGNUP_MIN_SECONDS = 1  # the time trap, shortened; the browser still has to wait it out
STARTUP_TIMEOUT = 60
MAIL_TIMEOUT = 30
STOP_TIMEOUT = 20
# Settings that would point the dev stack at something outside its own instance directory.
FOREIGN_SETTINGS = ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "SMTP_URL", "BASE_URL",
                    "DEV_MAIL_DIR", "SECRET_KEY", "SIGNUP_RATE_LIMIT", "FLASK_APP")


# --- the dev stack ---------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _children_of(pid: int) -> list[int]:
    """Direct children of pid, read from /proc (the dev command's web, worker and beat)."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Field 4 is the parent pid; the command name (field 2) may hold spaces, so split after ')'.
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            children.append(int(entry.name))
    return children


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class DevStack:
    def __init__(self, instance_dir: Path):
        self.instance_dir = instance_dir
        self.port = _free_port()
        self.smtp_port = _free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.env = {key: value for key, value in os.environ.items() if key not in FOREIGN_SETTINGS}
        self.env.update(FLASK_DEBUG="1", INSTANCE_DIR=str(instance_dir),
                        SIGNUP_MIN_SECONDS=str(SIGNUP_MIN_SECONDS), PYTHONUNBUFFERED="1")
        self.log_path = instance_dir.parent / "dev-stack.log"
        self.process: subprocess.Popen | None = None
        self.children: list[int] = []

    def log_tail(self, lines=60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def start(self) -> None:
        self.log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "flask", "--app", "wsgi", "dev",
             "--port", str(self.port), "--smtp-port", str(self.smtp_port)],
            cwd=PROJECT_DIR, env=self.env, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the dev stack exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/subscribe", timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the dev stack did not serve /subscribe within {STARTUP_TIMEOUT}s:\n"
                                   f"{self.log_tail()}")
            time.sleep(0.25)
        self.children = _children_of(self.process.pid)

    def stop(self) -> list[int]:
        """SIGTERM the dev command, which stops its children; return any child it left behind."""
        if self.process is None:
            return []
        # Children started since start() (none expected) are included too.
        children = sorted(set(self.children) | set(_children_of(self.process.pid)))
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()
        # Each child leads its own session; after a SIGKILL above they would be orphaned.
        leftovers = [pid for pid in children if _alive(pid)]
        for pid in leftovers:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return leftovers

    def flask(self, *args: str) -> subprocess.CompletedProcess:
        """An operator command against the same instance: `flask --app wsgi ARGS`."""
        return subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", *args],
                              cwd=PROJECT_DIR, env=self.env, capture_output=True, text=True,
                              timeout=60)


@pytest.fixture(scope="module")
def chromium_path():
    require("chromium", os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK), CHROMIUM)
    require("playwright", sync_playwright is not None, "pip install playwright")
    return CHROMIUM


@pytest.fixture(scope="module")
def dev_stack(chromium_path, tmp_path_factory):
    stack = DevStack(tmp_path_factory.mktemp("dev-stack") / "instance")
    try:
        stack.start()
        yield stack
    finally:
        leftovers = stack.stop()
        if leftovers:
            warnings.warn(f"the dev command left processes running after SIGTERM: {leftovers}")


@pytest.fixture(scope="module")
def browser(chromium_path):
    playwright = sync_playwright().start()
    browser = playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS, headless=True)
    yield browser
    browser.close()
    playwright.stop()


@pytest.fixture
def page(browser, dev_stack):
    context = browser.new_context(base_url=dev_stack.base_url)
    context.set_default_timeout(15_000)
    page = context.new_page()
    yield page
    context.close()


# --- what a person does --------------------------------------------------------------------

def unique_address(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:12]}@example.org"


def open_form(page) -> float:
    """Open /subscribe; return when the form was served (for the time trap)."""
    served_at = time.monotonic()
    response = page.goto("/subscribe")
    assert response.status == 200
    expect(page.locator("form.signup")).to_be_visible()
    return served_at


def wait_out_time_trap(served_at: float) -> None:
    """A person takes a moment to fill in the form; a faster submit is refused as a bot."""
    # The server measures from when it signed the form token, which is before served_at here.
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
