"""`flask --app wsgi check [--deploy]` as an operator runs it, in a process of its own: on the
embedded defaults (which the service refuses to start with), on a correct production environment
(PostgreSQL, a Redis with an append-only file, https, DKIM, a long key, a real postal address), and
on settings the service refuses or cannot even load."""

from __future__ import annotations

import re
import secrets
import subprocess
import sys

import pytest

from config import PROJECT_DIR
from tests.support.redis_server import RedisServer
from tests.support.scripts import SCRIPT_TIMEOUT, run_flask

FINDING = re.compile(r"^(error|warning): ([A-Z0-9_, ]+|configuration|startup): .+ Fix: .+$")


def findings(stdout: str) -> list[tuple[str, str]]:
    """(severity, setting) of each finding line; every line but the summary is one."""
    *lines, summary = stdout.strip().splitlines()
    assert summary.startswith("check: "), stdout
    assert all(FINDING.match(line) for line in lines), stdout
    return [tuple(FINDING.match(line).groups()) for line in lines]


EMBEDDED_DEFAULTS = [
    ("error", "SECRET_KEY"), ("error", "BASE_URL"), ("error", "BASE_URL"), ("error", "MAIL_FROM"),
    ("error", "MAIL_POSTAL_ADDRESS"), ("error", "SMTP_URL"),
    ("error", "DKIM_SELECTOR, DKIM_DOMAIN, DKIM_PRIVATE_KEY_PATH"), ("error", "DATABASE_URL"),
    ("warning", "REDIS_URL"),
]


def test_on_the_embedded_defaults_every_placeholder_is_listed_with_its_fix(tmp_path):
    plain = run_flask("check", INSTANCE_DIR=tmp_path)  # no SECRET_KEY: create_app refuses to start
    deploy = run_flask("check", "--deploy", INSTANCE_DIR=tmp_path)

    assert (plain.returncode, deploy.returncode) == (0, 1), plain.stderr + deploy.stderr
    assert "Traceback" not in plain.stderr + deploy.stderr
    assert plain.stdout == deploy.stdout
    assert findings(plain.stdout) == EMBEDDED_DEFAULTS
    assert plain.stdout.strip().endswith("check: 8 errors, 1 warning.")
    assert "Fix: SECRET_KEY=$(python -c 'import secrets; print(secrets.token_hex(32))')" in plain.stdout
    assert "WEB_CONCURRENCY=2 web processes" in plain.stdout


@pytest.fixture
def production(tmp_path, pg_database, smtp, dkim_keys):
    """What a correct production environment sets; its Redis keeps an append-only file."""
    if not RedisServer.available():
        pytest.skip("redis-server is not installed")
    redis = RedisServer(tmp_path / "redis", appendonly=True).start()
    yield {
        "SECRET_KEY": secrets.token_hex(32), "DATABASE_URL": pg_database, "REDIS_URL": redis.url(),
        "BASE_URL": "https://news.example.org", "MAIL_FROM": "Example News <news@news.example.org>",
        "MAIL_POSTAL_ADDRESS": "Example News Ltd, 1 High Street, Springfield", "SMTP_URL": smtp.url,
        "INSTANCE_DIR": tmp_path / "instance", **dkim_keys.settings(),
    }
    redis.stop()


@pytest.mark.postgres
@pytest.mark.redis
def test_a_correct_production_environment_is_ready(production):
    result = run_flask("check", "--deploy", **production)

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == "check: no errors, no warnings: ready for production.\n"


@pytest.mark.postgres
@pytest.mark.redis
def test_redis_without_persistence_is_a_warning_and_redis_out_of_reach_an_error(production, redis_server, tmp_path):
    no_aof = run_flask("check", "--deploy", **{**production, "REDIS_URL": redis_server.url(3)})
    gone = RedisServer(tmp_path / "gone")  # a free port where nothing listens
    unreachable = run_flask("check", "--deploy", **{**production, "REDIS_URL": gone.url()})

    assert no_aof.returncode == 0 and findings(no_aof.stdout) == [("warning", "REDIS_URL")], no_aof.stdout
    assert "keeps no persistence at all (appendonly no, no save points)" in no_aof.stdout
    assert unreachable.returncode == 1 and findings(unreachable.stdout) == [("error", "REDIS_URL")]
    assert f"Redis at 127.0.0.1:{gone.port}/0 does not answer" in unreachable.stdout


@pytest.mark.postgres
@pytest.mark.redis
def test_a_dkim_key_the_service_refuses_is_a_finding_not_a_traceback(production, tmp_path):
    broken = {**production, "DKIM_PRIVATE_KEY_PATH": tmp_path / "missing.pem"}
    plain = run_flask("check", **broken)
    deploy = run_flask("check", "--deploy", **broken)
    other = run_flask("digest", "list", **broken)

    assert (plain.returncode, deploy.returncode) == (0, 1)
    assert findings(plain.stdout) == [("error", "DKIM_SELECTOR, DKIM_DOMAIN, DKIM_PRIVATE_KEY_PATH")]
    assert f"Cannot read the DKIM key {tmp_path / 'missing.pem'}" in plain.stdout
    # Any other command still refuses, with the reason and no traceback.
    assert other.returncode == 1 and "Traceback" not in other.stderr
    assert "DKIM: Cannot read the DKIM key" in other.stderr and "flask --app wsgi check" in other.stderr


def test_settings_that_cannot_load_fail_the_check_even_without_deploy(tmp_path):
    result = run_flask("check", INSTANCE_DIR=tmp_path, SMTP_TIMEOUT="soon")

    assert result.returncode == 1
    assert result.stdout == ("error: configuration: SMTP_TIMEOUT: could not convert string to float: 'soon' "
                             "Fix: correct that variable.\n")


def test_outside_flask_s_command_line_the_refusal_stands(tmp_path):
    # gunicorn imports wsgi the same way: it must not get an app to serve.
    imported = subprocess.run([sys.executable, "-c", "import wsgi"], cwd=PROJECT_DIR, capture_output=True, text=True,
                              timeout=SCRIPT_TIMEOUT, env={"INSTANCE_DIR": str(tmp_path)})
    routes = run_flask("routes", INSTANCE_DIR=tmp_path)  # Flask's own command gets the check-only app

    assert imported.returncode == 1
    assert "newsletter.InsecureConfiguration: SECRET_KEY is not set" in imported.stderr
    assert routes.returncode == 0 and "/console" not in routes.stdout and "/subscribe" not in routes.stdout
