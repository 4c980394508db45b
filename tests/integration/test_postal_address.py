"""Outside debug and testing no digest goes out while MAIL_POSTAL_ADDRESS is the placeholder: the
CLI, the console, the API and the schedule all end in `start_sending`, which refuses, names the
setting and changes nothing. These apps run with TESTING off, as production does."""

from __future__ import annotations

import logging
import re
from datetime import timedelta
from html import unescape

import pytest
from sqlalchemy import func, select

from config import POSTAL_ADDRESS_PLACEHOLDER
from newsletter.extensions import db
from newsletter.models import (
    Article,
    Delivery,
    Digest,
    DigestArticle,
    DigestStatus,
    Operator,
    Subscriber,
    SubscriberStatus,
)
from newsletter.services import operators
from newsletter.services.digests import send_due_scheduled
from tests.support.forms import OPERATOR_PASSWORD, form_fields, log_in

EDITOR = "editor@example.org"
REFUSAL = ("MAIL_POSTAL_ADDRESS is still the placeholder, and every digest must carry the sender's postal "
           "address. Set MAIL_POSTAL_ADDRESS, then send again.")
REAL_ADDRESS = "Example News Ltd, 1 High Street, Springfield"


@pytest.fixture
def production(app, clock):
    """The app as production runs it: neither debug nor testing, the postal address left at its default."""
    app.config["TESTING"] = False
    assert app.config["MAIL_POSTAL_ADDRESS"] == POSTAL_ADDRESS_PLACEHOLDER and not (app.debug or app.testing)
    with app.app_context():
        operators.create_operator(EDITOR, "editor", OPERATOR_PASSWORD, clock())
        db.session.add(Subscriber(email="reader@example.com", status=SubscriberStatus.CONFIRMED, created_at=clock()))
        db.session.commit()
    return app


@pytest.fixture
def draft(production, clock) -> int:
    with production.app_context():
        url = "https://news.example.org/a/first"
        article = Article(key=url, url=url, title="First", summary_html="<p>First.</p>", published_at=clock(),
                          created_at=clock(), updated_at=clock())
        digest = Digest(subject="This week", status=DigestStatus.DRAFT, created_at=clock())
        digest.items = [DigestArticle(article=article, position=0)]
        db.session.add(digest)
        db.session.commit()
        return digest.id


def unchanged(app, digest_id, status=DigestStatus.DRAFT) -> bool:
    with app.app_context():
        deliveries = db.session.scalar(select(func.count()).select_from(Delivery))
        return db.session.get(Digest, digest_id).status is status and deliveries == 0


def test_digest_send_on_the_command_line_refuses_and_names_the_setting(app, draft):
    result = app.test_cli_runner().invoke(args=["digest", "send", str(draft)])

    assert result.exit_code == 1
    assert result.output == f"Error: {REFUSAL}\n"
    assert unchanged(app, draft)


def test_the_console_flashes_the_refusal(app, draft):
    editor = app.test_client()
    log_in(editor, EDITOR)
    page = f"/console/digests/{draft}"
    token = form_fields(editor.get(page).get_data(as_text=True))["csrf_token"]

    response = editor.post(f"{page}/send", data={"csrf_token": token}, follow_redirects=True)

    assert response.status_code == 200
    flashed = [unescape(re.sub(r"\s+", " ", m)) for m in re.findall(r'<p class="flash error" role="status">(.*?)</p>',
                                                                    response.get_data(as_text=True), re.S)]
    assert flashed == [REFUSAL]
    assert unchanged(app, draft)


def test_the_api_answers_400_naming_the_setting(app, draft, clock):
    with app.app_context():
        editor = db.session.scalar(select(Operator).where(Operator.email == EDITOR))
        token = operators.create_api_token(editor, "site", clock())[1]

    response = app.test_client().post(f"/api/v1/digests/{draft}/send", headers={"Authorization": f"Bearer {token}"})

    assert response.status_code == 400
    assert response.get_json() == {"error": REFUSAL, "field": "MAIL_POSTAL_ADDRESS"}
    assert unchanged(app, draft)


def test_a_scheduled_digest_waits_with_a_warning_until_the_address_is_set(app, draft, clock, caplog):
    with app.app_context():
        db.session.get(Digest, draft).status = DigestStatus.SCHEDULED
        db.session.get(Digest, draft).scheduled_for = clock() - timedelta(minutes=1)
        db.session.commit()
        with caplog.at_level(logging.WARNING, logger="newsletter.services.digests"):
            assert send_due_scheduled(clock()) == []
    assert [r.getMessage() for r in caplog.records] == [f"scheduled digest {draft} not sent: {REFUSAL}"]
    assert unchanged(app, draft, DigestStatus.SCHEDULED)

    app.config["MAIL_POSTAL_ADDRESS"] = REAL_ADDRESS
    with app.app_context():
        assert send_due_scheduled(clock()) == [draft]


@pytest.mark.parametrize("way", ["address", "debug"])
def test_with_a_real_address_or_in_debug_the_digest_goes_out(app, draft, way, monkeypatch):
    if way == "address":
        app.config["MAIL_POSTAL_ADDRESS"] = REAL_ADDRESS
    else:  # `flask dev` on one's own machine, where the placeholder is fine (the CLI reads FLASK_DEBUG)
        monkeypatch.setenv("FLASK_DEBUG", "1")
    result = app.test_cli_runner().invoke(args=["digest", "send", str(draft)])

    assert result.exit_code == 0, result.output
    assert result.output == f"Digest {draft}: sending to 1 subscribers.\n"
    assert not unchanged(app, draft)
