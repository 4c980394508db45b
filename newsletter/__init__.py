"""The newsletter service: a Flask app factory."""

from __future__ import annotations

import sqlite3

from flask import Flask, has_request_context
from sqlalchemy import event
from sqlalchemy.engine import Engine

from config import DEFAULT_SECRET_KEY, PROJECT_DIR, Config

from .auth import login_manager
from .extensions import csrf, db, limiter, migrate
from .proxies import trust_proxies
from .request_bodies import register_request_bodies


# The console's sections beside the dashboard, in menu order: (endpoint, label).
CONSOLE_SECTIONS = (("console_subscribers.index", "Subscribers"), ("console_articles.index", "Articles"),
                    ("console_digests.index", "Digests"))


class InsecureConfiguration(RuntimeError):
    """The service refuses to start with these settings; the message says why and what to set."""


def create_app(overrides: dict | None = None) -> Flask:
    app = Flask(__name__, template_folder=str(PROJECT_DIR / "templates"))
    app.config.from_object(Config())
    overrides = dict(overrides or {})
    clock = overrides.pop("CLOCK", None)
    app.config.update(overrides)
    if "SESSION_COOKIE_SECURE" not in overrides:
        app.config["SESSION_COOKIE_SECURE"] = app.config["BASE_URL"].startswith("https://")
    if clock is not None:
        app.extensions["clock"] = clock
    _refuse_default_secret(app)
    _check_settings(app)
    app.config["INSTANCE_DIR"].mkdir(parents=True, exist_ok=True)
    app.instance_path = str(app.config["INSTANCE_DIR"])

    app.wsgi_app = trust_proxies(app.wsgi_app, app.config["PROXY_FIX_X_FOR"], app.config["TRUSTED_PROXIES"])

    register_request_bodies(app)  # before CSRFProtect, whose check reads form bodies
    db.init_app(app)
    migrate.init_app(app, db, directory=str(PROJECT_DIR / "migrations"), render_as_batch=True)
    csrf.init_app(app)
    limiter.init_app(app)
    login_manager.init_app(app)

    from .queue import celery_init_app

    celery_init_app(app)
    _register_blueprints(app)
    _register_cli(app)
    from .logs import register_request_ids
    from .views.errors import register_error_handlers
    from .views.security import register_security_headers

    register_error_handlers(app)
    app.context_processor(_console_context(app))
    register_security_headers(app)
    register_request_ids(app)  # logging itself is configured by the entry points (wsgi.py, workers/)
    return app


def _refuse_default_secret(app: Flask) -> None:
    if app.config["SECRET_KEY"] == DEFAULT_SECRET_KEY and not (app.debug or app.testing):
        raise InsecureConfiguration(
            "SECRET_KEY is not set. Outside debug and testing the service refuses to start with the "
            "built-in development key, since anyone could forge confirmation and unsubscribe links with it. "
            "Set SECRET_KEY to a long random value, e.g. "
            "SECRET_KEY=$(python -c 'import secrets; print(secrets.token_hex(32))')."
        )


def _console_context(app: Flask):
    """What every console page may ask: the menu, and what the operator's role lets them do."""
    from flask_login import current_user

    from .models import Role

    def context() -> dict:
        user = current_user if has_request_context() else None  # emails render outside requests
        role = user.role if user is not None and user.is_authenticated else None
        return {
            "console_nav": [(endpoint, label) for endpoint, label in CONSOLE_SECTIONS if endpoint in app.view_functions],
            "can_edit": role is not None and role.allows(Role.EDITOR),
            "is_admin": role is not None and role.allows(Role.ADMIN),
        }

    return context


def _check_settings(app: Flask) -> None:
    """Settings that would only fail later, in a worker, fail here with a clear message."""
    from .errors import InvalidInput
    from .infra.smtp import parse_smtp_urls
    from .services.schedule import parse_schedule

    try:
        parse_smtp_urls(app.config["SMTP_URL"])
    except ValueError as error:
        raise InsecureConfiguration(f"SMTP_URL: {error}") from None
    if app.config["DIGEST_SCHEDULE"]:
        try:
            parse_schedule(app.config["DIGEST_SCHEDULE"], app.config["DIGEST_TIMEZONE"])
        except InvalidInput as error:
            raise InsecureConfiguration(f"{error.field}: {error.message}") from None
    _check_dkim(app)


def _check_dkim(app: Flask) -> None:
    # Every email is signed, a confirmation when its signup is decided: a key that cannot sign
    # must stop the start, not fail each signup.
    from email.utils import parseaddr

    from .mail.dkim import DkimConfigurationError, signer_from_config

    try:
        signer_from_config(app.config, parseaddr(app.config["MAIL_FROM"])[1].rpartition("@")[2] or "localhost")
    except DkimConfigurationError as error:
        raise InsecureConfiguration(f"DKIM: {error}") from None


def _register_blueprints(app: Flask) -> None:
    from .views import api, console, console_articles, console_digests, console_subscribers, operations, public

    for blueprint in (public.bp, api.bp, console.bp, console_subscribers.bp,
                      console_articles.bp, console_digests.bp, operations.bp):
        app.register_blueprint(blueprint)
    if app.debug or app.config["DEV_MAIL_VIEWER"]:
        from .views import devmail

        app.register_blueprint(devmail.bp)


def _register_cli(app: Flask) -> None:
    from .cli import register

    register(app)


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection, connection_record):
    # Web, worker and beat write the same SQLite file at once: WAL lets readers and one writer
    # overlap, and the busy timeout waits for the lock instead of failing.
    if isinstance(dbapi_connection, sqlite3.Connection):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()
