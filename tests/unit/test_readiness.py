"""The readiness checks behind `flask check`, one setting at a time, from a production environment
that is correct but for the setting under test (without Redis, so nothing is asked over the network)."""

from __future__ import annotations

import pytest

from config import Config
from newsletter.services.readiness import (
    ERROR,
    WARNING,
    NotReadyToSend,
    findings,
    refuse_placeholder_postal_address,
)

NO_REDIS = (WARNING, "REDIS_URL")


@pytest.fixture
def production(dkim_keys):
    return {
        "SECRET_KEY": "k" * 64, "DATABASE_URL": "postgresql://newsletter@db.example.org/newsletter",
        "BASE_URL": "https://news.example.org", "MAIL_FROM": "Example News <news@news.example.org>",
        "MAIL_POSTAL_ADDRESS": "Example News Ltd, 1 High Street, Springfield",
        "SMTP_URL": "smtp+starttls://relay.example.org:587", **dkim_keys.settings(),
    }


def found(environ: dict, debug: bool = False) -> list[tuple[str, str]]:
    config = {**vars(Config(environ)), "DEBUG": debug, "TESTING": False}
    return [(finding.severity, finding.setting) for finding in findings(config, redis_timeout=1)]


def messages(environ: dict) -> str:
    return "\n".join(f.line() for f in findings({**vars(Config(environ)), "DEBUG": False, "TESTING": False}, 1))


def test_a_correct_environment_without_redis_only_misses_redis(production):
    assert found(production) == [NO_REDIS]


def test_a_short_secret_key_is_an_error_with_its_length(production):
    environ = {**production, "SECRET_KEY": "x" * 31}
    assert found(environ) == [(ERROR, "SECRET_KEY"), NO_REDIS]
    assert "SECRET_KEY: 31 characters" in messages(environ)
    assert found({**production, "SECRET_KEY": "x" * 32}) == [NO_REDIS]


@pytest.mark.parametrize("base_url, problems", [
    ("http://news.example.org", ["http, not https"]),
    ("https://localhost:8000", ["localhost: links in emails lead readers to their own machine"]),
    ("http://[::1]:5000", ["http, not https", "::1: links"]),
])
def test_base_url_must_be_public_and_https(production, base_url, problems):
    environ = {**production, "BASE_URL": base_url}
    assert found(environ) == [(ERROR, "BASE_URL")] * len(problems) + [NO_REDIS]
    assert all(problem in messages(environ) for problem in problems)


@pytest.mark.parametrize("mail_from", ["news@localhost", "News <news@mail.localhost>", "news", "news@intranet"])
def test_a_from_address_without_a_public_domain_is_an_error(production, mail_from):
    assert found({**production, "MAIL_FROM": mail_from})[0] == (ERROR, "MAIL_FROM")


def test_debug_and_the_mail_viewer_are_errors(production):
    assert found(production, debug=True) == [(ERROR, "FLASK_DEBUG"), NO_REDIS]
    assert found({**production, "DEV_MAIL_VIEWER": "1"}) == [(ERROR, "DEV_MAIL_VIEWER"), NO_REDIS]


def test_settings_the_service_refuses_to_start_with_are_errors(production, tmp_path):
    assert found({**production, "SMTP_URL": "ftp://relay.example.org"})[0] == (ERROR, "SMTP_URL")
    assert found({**production, "DIGEST_SCHEDULE": "every morning"})[0] == (ERROR, "DIGEST_SCHEDULE")
    unreadable = {**production, "DKIM_PRIVATE_KEY_PATH": str(tmp_path / "gone.pem")}
    assert found(unreadable)[0] == (ERROR, "DKIM_SELECTOR, DKIM_DOMAIN, DKIM_PRIVATE_KEY_PATH")
    assert "Cannot read the DKIM key" in messages(unreadable)


def test_dkim_for_another_domain_than_the_from_is_a_warning(production):
    environ = {**production, "DKIM_DOMAIN": "other.example.net"}
    assert found(environ) == [(WARNING, "DKIM_DOMAIN"), NO_REDIS]
    assert "DMARC will not pass" in messages(environ)
    assert found({**production, "MAIL_FROM": "News <news@mail.news.example.org>"}) == [NO_REDIS]  # a subdomain aligns


def test_sqlite_is_an_error_with_more_than_one_worker_only(production):
    sqlite = {**production, "DATABASE_URL": "sqlite:////srv/newsletter.sqlite"}
    assert (ERROR, "DATABASE_URL") in found(sqlite)  # WEB_CONCURRENCY: the Procfile's 2
    assert "WEB_CONCURRENCY=3 web processes" in messages({**sqlite, "WEB_CONCURRENCY": "3"})
    assert found({**sqlite, "WEB_CONCURRENCY": "1"}) == [NO_REDIS]
    redis_broker = {**sqlite, "WEB_CONCURRENCY": "1", "CELERY_BROKER_URL": "redis://127.0.0.1:1/0"}
    assert (ERROR, "DATABASE_URL") in found(redis_broker)
    assert "a Redis broker, whose workers may run on machines that do not have this file" in messages(redis_broker)


def test_the_placeholder_postal_address_stops_a_send_only_outside_debug_and_testing(production):
    placeholder = vars(Config({}))
    with pytest.raises(NotReadyToSend, match="MAIL_POSTAL_ADDRESS is still the placeholder") as refused:
        refuse_placeholder_postal_address({**placeholder, "DEBUG": False, "TESTING": False})
    assert refused.value.field == "MAIL_POSTAL_ADDRESS"
    refuse_placeholder_postal_address({**placeholder, "DEBUG": True, "TESTING": False})
    refuse_placeholder_postal_address({**placeholder, "DEBUG": False, "TESTING": True})
    refuse_placeholder_postal_address({**vars(Config(production)), "DEBUG": False, "TESTING": False})
