"""Operator commands: publishing terms and printing the proof of consent."""

import json

from sqlalchemy import select

from newsletter.extensions import db
from newsletter.models import TermsVersion
from newsletter.services.terms import text_sha256

from .test_links import link_paths, press_button


def test_terms_publish_adds_a_version_and_the_form_shows_it(app, runner, client, tmp_path):
    terms_file = tmp_path / "terms.txt"
    terms_file.write_text("New terms: we send a weekly digest and nothing else.\n", encoding="utf-8")
    client.get("/subscribe")  # version 1, the built-in text
    result = runner.invoke(args=["terms", "publish", str(terms_file)])
    assert result.exit_code == 0, result.output
    assert "Published terms version 2" in result.output
    with app.app_context():
        versions = db.session.scalars(select(TermsVersion).order_by(TermsVersion.version)).all()
        assert [v.version for v in versions] == [1, 2]  # the old text is kept forever
        assert versions[1].sha256 == text_sha256("New terms: we send a weekly digest and nothing else.")
    assert "we send a weekly digest" in client.get("/subscribe").get_data(as_text=True)

    again = runner.invoke(args=["terms", "publish", str(terms_file)])
    assert again.exit_code != 0 and "already the current version" in again.output
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    assert runner.invoke(args=["terms", "publish", str(empty)]).exit_code != 0


def test_subscribers_consent_prints_the_ledger_of_a_confirmed_then_unsubscribed_address(app, runner, client, visitor):
    visitor.sign_up("Reader@Example.com", environ_base={"REMOTE_ADDR": "203.0.113.9"})
    confirm, unsubscribe = link_paths(app)
    press_button(client, confirm)
    press_button(client, unsubscribe)
    result = runner.invoke(args=["subscribers", "consent", "reader@example.com"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    assert record["status"] == "unsubscribed"
    assert [e["kind"] for e in record["events"]] == ["requested", "confirmed", "unsubscribed"]
    requested = record["events"][0]
    assert requested["ip"] == "203.0.113.9"
    assert requested["terms_version"] == 1 and len(requested["terms_sha256"]) == 64
    assert requested["checkbox_value"] == "yes"
    assert requested["source"].startswith("subscribe: ")
    assert all(e["at"].endswith("Z") and e["user_agent"] for e in record["events"])


def test_subscribers_consent_for_an_unknown_address_says_so(runner):
    result = runner.invoke(args=["subscribers", "consent", "nobody@example.com"])
    assert result.exit_code != 0 and "No subscriber" in result.output
