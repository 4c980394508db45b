"""Every setting comes from the environment, with an embedded default that needs no server.

The defaults run the whole service on one machine: SQLite for data, a SQLite file as the Celery
broker, a local SMTP sink for mail. Production sets DATABASE_URL, CELERY_BROKER_URL / REDIS_URL,
SMTP_URL, SECRET_KEY and BASE_URL.

SETTINGS declares each variable once; Config reads them in order, so a default may derive from a
setting declared above it. README.md's configuration table lists the same names (a test checks it).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROJECT_DIR = Path(__file__).resolve().parent

# The SECRET_KEY used when none is set. create_app refuses to start with it outside debug/testing.
DEFAULT_SECRET_KEY = "dev-only-insecure-secret-key"
# MAIL_POSTAL_ADDRESS until one is set: `flask check` reports it; outside debug/testing no digest is sent with it.
POSTAL_ADDRESS_PLACEHOLDER = "Postal address not configured (set MAIL_POSTAL_ADDRESS)"


def _sqlite_url(path: Path) -> str:
    # Always absolute: Kombu and Alembic resolve relative SQLite paths differently from Flask.
    return f"sqlite:///{path.resolve()}"


def database_url(raw: str) -> str:
    # Heroku-style URLs say postgres://; SQLAlchemy wants a dialect it knows, and we use psycopg 3.
    if raw.startswith("postgres://"):
        raw = "postgresql://" + raw[len("postgres://"):]
    if raw.startswith("postgresql://"):
        raw = "postgresql+psycopg://" + raw[len("postgresql://"):]
    return raw


# How a variable's text becomes a value: the "type" column of SETTINGS.
def text(value: str) -> str:
    return value


def flag(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


def path(value: str | Path) -> Path:
    return Path(value).resolve()


def comma_list(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def lower(value: str) -> str:
    return value.strip().lower()


def upper(value: str) -> str:
    return value.strip().upper()


def no_trailing_slash(value: str) -> str:
    return value.rstrip("/")


class InvalidSetting(ValueError):
    """A variable whose text its type does not take: the configuration cannot load."""


@dataclass(frozen=True)
class Setting:
    name: str  # the environment variable
    type: Callable[[Any], Any]  # parses the variable's text (or the default)
    # As the environment would spell it; None: unset. A callable derives it from the settings read before.
    default: str | None | Callable[[Config], Any]
    doc: str
    key: str | None = None  # the Flask config key, when it is not the variable's name

    @property
    def config_key(self) -> str:
        return self.key or self.name

    def read(self, environ: Mapping[str, str], config: Config) -> Any:
        raw = environ.get(self.name)
        if raw is None or raw == "":  # an empty variable counts as unset
            raw = self.default(config) if callable(self.default) else self.default
        try:
            return None if raw is None else self.type(raw)
        except ValueError as error:
            raise InvalidSetting(f"{self.name}: {error}") from None


DAY = 24 * 3600

SETTINGS = (
    Setting("INSTANCE_DIR", path, lambda _: PROJECT_DIR / "instance",
            "where the embedded SQLite files, beat schedule and dev mail live"),
    Setting("SECRET_KEY", text, DEFAULT_SECRET_KEY, "signs links and sessions"),
    # Keep it stable: changing it forgets the suppressions.
    Setting("SUPPRESSION_KEY", text, lambda c: c.SECRET_KEY, "keys the HMAC of suppressed addresses"),
    Setting("BASE_URL", no_trailing_slash, "http://127.0.0.1:5000", "where the service is reached (links in emails)"),
    Setting("DATABASE_URL", database_url, lambda c: _sqlite_url(c.INSTANCE_DIR / "newsletter.sqlite"),
            "the database (SQLAlchemy URL; postgres:// works)", key="SQLALCHEMY_DATABASE_URI"),
    Setting("REDIS_URL", text, None, "Redis for the broker, rate limits and the sent journal"),
    Setting("CELERY_BROKER_URL", text, lambda c: c.REDIS_URL or "sqla+" + _sqlite_url(c.INSTANCE_DIR / "broker.sqlite"),
            "the Celery broker"),
    Setting("SMTP_URL", text, "smtp://127.0.0.1:8025", "the SMTP relays, comma-separated, tried in turn"),
    Setting("SMTP_TIMEOUT", float, "30", "seconds an SMTP connect or reply may take"),
    Setting("MAIL_FROM", text, "Newsletter <newsletter@localhost>", "the From of every email"),
    # Default: unsubscribe@ the From domain.
    Setting("LIST_UNSUBSCRIBE_MAILTO", text, None, "the mailto: of List-Unsubscribe"),
    Setting("SITE_NAME", text, "Our latest news", "the newsletter's name in pages and emails"),

    Setting("SIGNUP_MIN_SECONDS", float, "2", "a signup form sent back sooner than this is refused"),
    Setting("SIGNUP_FORM_MAX_AGE", int, str(DAY), "seconds a served signup form stays good"),
    Setting("SIGNUP_RATE_LIMIT", text, "10 per minute;100 per hour", "signups per IP (Flask-Limiter syntax)"),
    Setting("SIGNUP_SWEEP_SECONDS", float, "30", "how often beat re-enqueues signups a lost queue message left undecided"),
    Setting("CONFIRM_RESEND_SECONDS", int, "300", "a pending address gets its confirmation again at most this often"),
    Setting("CONFIRM_TOKEN_MAX_AGE", int, str(7 * DAY), "seconds a confirmation link works"),
    Setting("EMBED_ALLOWED_ORIGINS", text, "*", "origins that may frame /embed and call POST /api/v1/subscribe"),
    # Flask's own key; a view may take more (@body_limit: POST /api/v1/articles, the console's CSV upload).
    Setting("MAX_CONTENT_LENGTH", int, str(2**20), "the largest request body read, in bytes (413 beyond)"),
    Setting("PROXY_FIX_X_FOR", int, "0", "how many proxies in front set X-Forwarded-For (0: trust none)"),
    # X-Forwarded-* from any peer outside these CIDRs is ignored.
    Setting("TRUSTED_PROXIES", text, "", "where those proxies are: CIDRs, comma-separated"),

    # Transactional mail (confirmations): retries of temporary failures.
    Setting("OUTBOX_SWEEP_SECONDS", float, "30", "how often beat re-enqueues due confirmation mail"),
    Setting("OUTBOX_LEASE_SECONDS", int, "120", "how long a claimed confirmation is one worker's"),
    Setting("OUTBOX_EXPIRY_SECONDS", int, str(3 * DAY), "a confirmation still failing this long fails for good"),

    # Console CSV imports, run by workers: a job silent this long lost its worker and is resumed.
    Setting("IMPORT_STALE_SECONDS", float, "60", "seconds without a committed batch before an import job is resumed"),

    # Articles in.
    Setting("FEED_URLS", comma_list, "", "RSS/Atom feeds beat fetches, comma-separated"),
    Setting("FEED_FETCH_SECONDS", float, "900", "how often beat fetches FEED_URLS"),
    Setting("FEED_TIMEOUT", float, "20", "seconds one feed's whole fetch may take"),
    Setting("FEED_ALLOW_PRIVATE", flag, "0", "let feeds reach loopback and private addresses (intranet feeds)"),
    Setting("API_TOKEN", text, None, "the site-wide bearer token of POST /api/v1/articles"),

    # Bulk delivery.
    Setting("SEND_RATE", float, "0", "messages per second across all workers; 0: no limit"),
    Setting("DELIVERY_BATCH_SIZE", int, "250", "deliveries per task"),
    Setting("DELIVERY_CLAIM_SIZE", int, "250", "deliveries per claim"),
    # The live worker renews its leases every third of this: a dead one's claim is free within it.
    Setting("DELIVERY_LEASE_SECONDS", int, "30", "how long a claim stays a worker's without renewal"),
    Setting("DELIVERY_RETRY_BASE_SECONDS", float, "60", "the first back-off after a 4xx"),
    Setting("DELIVERY_EXPIRY_SECONDS", int, str(3 * DAY), "a delivery still deferred this long fails"),
    Setting("DELIVERY_SWEEP_SECONDS", float, "15", "how often beat re-hands lost delivery work"),
    # When the broker cannot tell whether the bulk queue is empty: no live lease and nothing sent for this long.
    Setting("DELIVERY_STALL_SECONDS", float, "30", "seconds without progress before a digest's work is re-handed"),

    # Digests out.
    Setting("MAIL_POSTAL_ADDRESS", text, POSTAL_ADDRESS_PLACEHOLDER, "the sender's postal address in every digest footer"),
    Setting("LIST_ID", text, None, 'the List-Id header (default: "SITE_NAME" <newsletter.FROM-DOMAIN>)'),
    Setting("DIGEST_SCHEDULE", text, None, 'when to compose and send a digest, cron syntax, e.g. "0 7 * * *"'),
    Setting("DIGEST_TIMEZONE", text, "UTC", "the zone of DIGEST_SCHEDULE"),
    Setting("DKIM_SELECTOR", text, None, "the DKIM selector; digests are signed when all three DKIM settings are set"),
    Setting("DKIM_DOMAIN", text, None, "the DKIM signing domain (d=)"),
    Setting("DKIM_PRIVATE_KEY_PATH", text, None, "the PEM file of the DKIM private key"),
    # An Ed25519 key (RFC 8463) signs beside the RSA key, under its own selector.
    Setting("DKIM_ED25519_PRIVATE_KEY_PATH", text, None, "the PEM file of an Ed25519 DKIM key, signing beside RSA"),
    Setting("DKIM_ED25519_SELECTOR", text, None, 'the Ed25519 key\'s selector (default: DKIM_SELECTOR + "-ed25519")'),
    # Keyed so that no other install makes our Message-IDs; keep it stable.
    Setting("MESSAGE_ID_KEY", text, None, "keys the deterministic Message-IDs (default: SECRET_KEY)"),

    # Operators.
    Setting("LOGIN_MAX_FAILURES", int, "5", "wrong passwords before a console account locks"),
    Setting("LOGIN_LOCKOUT_SECONDS", int, "900", "how long a locked console account stays locked"),
    Setting("LOGIN_RATE_LIMIT", text, "10 per minute", "login attempts per IP"),

    # The development mail viewer at /dev/mail reads what the local SMTP sink stored here.
    Setting("DEV_MAIL_DIR", path, lambda c: c.INSTANCE_DIR / "mail", "where the dev SMTP sink stores mail"),
    Setting("DEV_MAIL_VIEWER", flag, "0", "serve the mail viewer at /dev/mail outside debug"),

    # Operations.
    Setting("LOG_FORMAT", lower, "text", "text, or json: one JSON object per line"),
    Setting("LOG_LEVEL", upper, "INFO", "the root log level"),
    Setting("METRICS_ENABLED", flag, "0", "serve Prometheus metrics at /metrics (404 when off)"),
    # Shared by gunicorn's and Celery's processes on one host, so /metrics sums all of them.
    Setting("PROMETHEUS_MULTIPROC_DIR", text, None, "the prometheus-client multiprocess directory"),
    Setting("SENTRY_DSN", text, None, "report errors of web and workers to Sentry when set"),
    Setting("READINESS_TIMEOUT", float, "2", "seconds each check of /readyz may take"),
    # The Procfile's `gunicorn --workers`; `flask check` reads it to tell SQLite apart from its limits.
    Setting("WEB_CONCURRENCY", int, "2", "web processes gunicorn starts (the Procfile's --workers)"),
)


class Config:
    def __init__(self, environ: Mapping[str, str] | None = None):
        environ = os.environ if environ is None else environ
        for setting in SETTINGS:
            setattr(self, setting.config_key, setting.read(environ, self))

        # Flask's and its extensions' own settings, fixed or derived from the ones above.
        self.RATELIMIT_STORAGE_URI = self.REDIS_URL or "memory://"
        # Redis out of reach: limits go on in this process's memory (one WARNING per outage) rather
        # than failing signups and logins; a Redis that hangs costs a request a second at most.
        self.RATELIMIT_IN_MEMORY_FALLBACK_ENABLED = True
        self.RATELIMIT_STORAGE_OPTIONS = {"socket_connect_timeout": 1, "socket_timeout": 1}
        self.RATELIMIT_HEADERS_ENABLED = True
        self.SQLALCHEMY_ENGINE_OPTIONS = {"pool_pre_ping": True}
        self.WTF_CSRF_TIME_LIMIT = None  # the session holds the token; the form token carries its own age
        self.SESSION_COOKIE_HTTPONLY = True
        self.SESSION_COOKIE_SAMESITE = "Lax"
        self.SESSION_COOKIE_SECURE = self.BASE_URL.startswith("https://")

