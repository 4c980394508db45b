"""An editor's round in chromium, against the whole dev stack: log in, compose a digest from imported
articles, preview it, test-send it, send it and watch the progress view reach done. The local SMTP
sink must then hold every copy, each subscriber's exactly once.

Set NEWSLETTER_SCREENSHOTS=docs to refresh the screenshots in docs/ (dashboard, progress view).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from email import policy
from email.parser import BytesParser
from pathlib import Path

import pytest

from config import PROJECT_DIR

try:
    from playwright.sync_api import expect
except ImportError:  # pragma: no cover - the dev requirements install it
    expect = None

pytestmark = pytest.mark.browser

EDITOR, PASSWORD = "editor@example.org", "an editor's long password"
READERS = [f"reader{n:02d}@example.org" for n in range(25)]


def flask(stack, *args, stdin: str | None = None) -> str:
    result = subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", *args], cwd=PROJECT_DIR,
                            env=stack.env, input=stdin, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def received(stack) -> list:
    folder = stack.instance_dir / "mail"
    return [BytesParser(policy=policy.default).parsebytes(path.read_bytes()) for path in sorted(folder.glob("*.eml"))]


@pytest.fixture(scope="module")
def editorial(dev_stack, tmp_path_factory):
    """What the site already has: an editor, a confirmed list and the articles of two feeds."""
    flask(dev_stack, "operators", "create", EDITOR, "--role", "editor", stdin=PASSWORD + "\n")
    listing = tmp_path_factory.mktemp("list") / "readers.csv"
    listing.write_text("email,name\n" + "".join(f"{e},Reader {n}\n" for n, e in enumerate(READERS)))
    flask(dev_stack, "subscribers", "import", str(listing), "--consent-source", "console test", "--confirmed")
    flask(dev_stack, "articles", "import", "tests/fixtures/blog.rss")
    flask(dev_stack, "articles", "import", "tests/fixtures/news.atom")
    return dev_stack


def screenshot(page, name: str, tmp_path: Path) -> None:
    folder = Path(os.environ.get("NEWSLETTER_SCREENSHOTS") or tmp_path)
    if not folder.is_absolute():
        folder = PROJECT_DIR / folder
    page.screenshot(path=str(folder / name), full_page=True)


def test_editor_composes_previews_test_sends_sends_and_watches_it_done(editorial, page, tmp_path):
    page.on("dialog", lambda dialog: dialog.accept())  # "Send digest N to every confirmed subscriber now?"

    page.goto("/console/login")
    page.fill("#email", EDITOR)
    page.fill("#password", PASSWORD)
    page.click("#login-button")
    expect(page.locator("h1")).to_have_text("Dashboard")
    expect(page.locator("#count-confirmed")).to_have_text("25")

    page.goto("/console/digests/new")
    boxes = page.locator("input[name=article]")
    assert boxes.count() == 6
    page.fill("#subject", "This week on the allotment")
    page.click("button:has-text('Create draft')")
    expect(page.locator(".flash.notice")).to_contain_text("created with 6 articles")
    digest_url = page.url

    page.click("a:has-text('Preview')")
    frame = page.frame_locator("iframe.mail-preview")
    expect(frame.locator("body")).to_contain_text("Spring planting")
    expect(page.locator("pre")).to_contain_text("Spring planting")

    page.goto(digest_url)
    page.click("button:has-text('Send a test copy')")
    expect(page.locator(".flash.notice")).to_contain_text(f"sent to {EDITOR}")

    page.click("button:has-text('Send now to every confirmed subscriber')")
    expect(page.locator("[data-field=label]")).to_have_text("Done", timeout=60_000)
    expect(page.locator("[data-field=sent]")).to_have_text("25")
    expect(page.locator("[data-field=failed]")).to_have_text("0")
    screenshot(page, "digest-progress.png", tmp_path)

    page.goto("/console/")
    screenshot(page, "dashboard.png", tmp_path)

    mail = received(editorial)
    digests = Counter(m["To"].addresses[0].addr_spec for m in mail if m["Subject"] == "This week on the allotment")
    assert digests == Counter({reader: 1 for reader in READERS})
    tests = [m for m in mail if m["Subject"] == "[TEST] This week on the allotment"]
    assert [m["To"].addresses[0].addr_spec for m in tests] == [EDITOR]
    assert all(m["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click" for m in mail)
