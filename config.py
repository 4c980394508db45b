"""Every setting comes from the environment, with an embedded default that needs no server.

The defaults run the whole service on one machine: SQLite for data, a SQLite file as the Celery
broker, a local SMTP sink for mail. Production sets DATABASE_URL, CELERY_BROKER_URL / REDIS_URL,
SMTP_URL, SECRET_KEY and BASE_URL.
"""

import os
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent

# The SECRET_KEY used when none is set. create_app refuses to start with it outside debug/testing.
DEFAULT_SECRET_KEY = "dev-only-insecure-secret-key"


def _env(name, default=None):
    value = os.environ.get(name)
    return default if value is None or value == "" else value


def _env_bool(name, default=False):
    value = _env(name)
    if value is None:
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


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


class Config:
    def __init__(self):
        self.INSTANCE_DIR = Path(_env("INSTANCE_DIR", PROJECT_DIR / "instance")).resolve()

        self.SECRET_KEY = _env("SECRET_KEY", DEFAULT_SECRET_KEY)
        # Keys the HMAC of suppressed addresses. Keep it stable: changing it forgets the suppressions.
        self.SUPPRESSION_KEY = _env("SUPPRESSION_KEY", self.SECRET_KEY)
        self.BASE_URL = _env("BASE_URL", "http://127.0.0.1:5000").rstrip("/")

        self.SQLALCHEMY_DATABASE_URI = database_url(
            _env("DATABASE_URL", _sqlite_url(self.INSTANCE_DIR / "newsletter.sqlite"))
        )

        self.REDIS_URL = _env("REDIS_URL")
        broker_default = self.REDIS_URL or "sqla+" + _sqlite_url(self.INSTANCE_DIR / "broker.sqlite")
        self.CELERY_BROKER_URL = _env("CELERY_BROKER_URL", broker_default)

        self.SMTP_URL = _env("SMTP_URL", "smtp://127.0.0.1:8025")
        self.SMTP_TIMEOUT = float(_env("SMTP_TIMEOUT", "30"))
        self.MAIL_FROM = _env("MAIL_FROM", "Newsletter <newsletter@localhost>")
        # Where mail clients send the List-Unsubscribe mailto: (default: unsubscribe@ the From domain).
        self.LIST_UNSUBSCRIBE_MAILTO = _env("LIST_UNSUBSCRIBE_MAILTO")
        self.SITE_NAME = _env("SITE_NAME", "Our latest news")

        self.SIGNUP_MIN_SECONDS = float(_env("SIGNUP_MIN_SECONDS", "2"))
        self.SIGNUP_FORM_MAX_AGE = int(_env("SIGNUP_FORM_MAX_AGE", str(24 * 3600)))
        self.SIGNUP_RATE_LIMIT = _env("SIGNUP_RATE_LIMIT", "10 per minute;100 per hour")
        self.CONFIRM_RESEND_SECONDS = int(_env("CONFIRM_RESEND_SECONDS", "300"))
        self.CONFIRM_TOKEN_MAX_AGE = int(_env("CONFIRM_TOKEN_MAX_AGE", str(7 * 24 * 3600)))
        # Origins allowed to call POST /api/v1/subscribe from a browser (the embed script).
        self.EMBED_ALLOWED_ORIGINS = _env("EMBED_ALLOWED_ORIGINS", "*")
        # How many proxies in front of the app set X-Forwarded-For (0: trust none).
        self.PROXY_FIX_X_FOR = int(_env("PROXY_FIX_X_FOR", "0"))
        # Where those proxies are (CIDRs, comma-separated): X-Forwarded-* from any other peer is ignored.
        self.TRUSTED_PROXIES = _env("TRUSTED_PROXIES", "")

        # Transactional mail (confirmations): retries of temporary failures.
        self.OUTBOX_SWEEP_SECONDS = float(_env("OUTBOX_SWEEP_SECONDS", "30"))
        self.OUTBOX_LEASE_SECONDS = int(_env("OUTBOX_LEASE_SECONDS", "120"))
        self.OUTBOX_EXPIRY_SECONDS = int(_env("OUTBOX_EXPIRY_SECONDS", str(3 * 24 * 3600)))

        # Articles in: feeds fetched by beat every FEED_FETCH_SECONDS, and the token of the articles API.
        self.FEED_URLS = [u.strip() for u in _env("FEED_URLS", "").split(",") if u.strip()]
        self.FEED_FETCH_SECONDS = float(_env("FEED_FETCH_SECONDS", "900"))
        self.FEED_TIMEOUT = float(_env("FEED_TIMEOUT", "20"))
        self.API_TOKEN = _env("API_TOKEN")

        # Bulk delivery.
        self.SEND_RATE = float(_env("SEND_RATE", "0"))  # messages per second across all workers; 0: no limit
        self.DELIVERY_BATCH_SIZE = int(_env("DELIVERY_BATCH_SIZE", "250"))  # deliveries per task
        self.DELIVERY_CLAIM_SIZE = int(_env("DELIVERY_CLAIM_SIZE", "250"))  # deliveries per claim
        self.DELIVERY_LEASE_SECONDS = int(_env("DELIVERY_LEASE_SECONDS", "300"))
        self.DELIVERY_RETRY_BASE_SECONDS = float(_env("DELIVERY_RETRY_BASE_SECONDS", "60"))  # first 4xx back-off
        self.DELIVERY_EXPIRY_SECONDS = int(_env("DELIVERY_EXPIRY_SECONDS", str(3 * 24 * 3600)))
        self.DELIVERY_SWEEP_SECONDS = float(_env("DELIVERY_SWEEP_SECONDS", "30"))
        # A digest with open rows and no live lease for this long lost its tasks: hand them out again.
        self.DELIVERY_STALL_SECONDS = float(_env("DELIVERY_STALL_SECONDS", "30"))

        # Digests out.
        self.MAIL_POSTAL_ADDRESS = _env("MAIL_POSTAL_ADDRESS", "Postal address not configured (set MAIL_POSTAL_ADDRESS)")
        self.LIST_ID = _env("LIST_ID")  # default: "<SITE_NAME> <newsletter.<From domain>>"
        self.DIGEST_SCHEDULE = _env("DIGEST_SCHEDULE")  # cron syntax, e.g. "0 7 * * *"
        self.DIGEST_TIMEZONE = _env("DIGEST_TIMEZONE", "UTC")
        self.DKIM_SELECTOR = _env("DKIM_SELECTOR")
        self.DKIM_DOMAIN = _env("DKIM_DOMAIN")
        self.DKIM_PRIVATE_KEY_PATH = _env("DKIM_PRIVATE_KEY_PATH")

        # Operators.
        self.LOGIN_MAX_FAILURES = int(_env("LOGIN_MAX_FAILURES", "5"))
        self.LOGIN_LOCKOUT_SECONDS = int(_env("LOGIN_LOCKOUT_SECONDS", "900"))
        self.LOGIN_RATE_LIMIT = _env("LOGIN_RATE_LIMIT", "10 per minute")

        self.RATELIMIT_STORAGE_URI = self.REDIS_URL or "memory://"
        self.RATELIMIT_HEADERS_ENABLED = True

        # The development mail viewer at /dev/mail reads what the local SMTP sink stored here.
        self.DEV_MAIL_DIR = Path(_env("DEV_MAIL_DIR", self.INSTANCE_DIR / "mail")).resolve()
        self.DEV_MAIL_VIEWER = _env_bool("DEV_MAIL_VIEWER", False)

        self.SQLALCHEMY_ENGINE_OPTIONS = {"pool_pre_ping": True}
        self.WTF_CSRF_TIME_LIMIT = None  # the session holds the token; the form token carries its own age
        self.SESSION_COOKIE_HTTPONLY = True
        self.SESSION_COOKIE_SAMESITE = "Lax"
        self.SESSION_COOKIE_SECURE = self.BASE_URL.startswith("https://")
