"""Production readiness: the settings that are placeholders or unsafe for production, each with a fix.

`flask --app wsgi check [--deploy]` prints the findings; `start_sending` refuses, outside debug and
testing, the one no digest may go out with: the placeholder postal address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from email.utils import parseaddr
from typing import Any
from urllib.parse import urlsplit

import redis

from config import DEFAULT_SECRET_KEY, POSTAL_ADDRESS_PLACEHOLDER, SETTINGS

from ..errors import InvalidInput

ERROR, WARNING = "error", "warning"
MIN_SECRET_KEY_LENGTH = 32
NEW_SECRET = "SECRET_KEY=$(python -c 'import secrets; print(secrets.token_hex(32))')"
_DEFAULTS = {setting.name: setting.default for setting in SETTINGS}


@dataclass(frozen=True)
class Finding:
    setting: str
    severity: str  # ERROR or WARNING
    problem: str
    fix: str

    def line(self) -> str:
        return f"{self.severity}: {self.setting}: {self.problem} Fix: {self.fix}"


class NotReadyToSend(InvalidInput):
    """A setting every digest needs is still a placeholder."""


def refuse_placeholder_postal_address(config: Mapping[str, Any]) -> None:
    """Every digest carries the sender's postal address (CAN-SPAM): outside debug and testing, none
    goes out with the placeholder."""
    if config["MAIL_POSTAL_ADDRESS"] == POSTAL_ADDRESS_PLACEHOLDER and not (config["DEBUG"] or config["TESTING"]):
        raise NotReadyToSend("MAIL_POSTAL_ADDRESS", "MAIL_POSTAL_ADDRESS is still the placeholder, and every digest "
                             "must carry the sender's postal address. Set MAIL_POSTAL_ADDRESS, then send again.")


def findings(config: Mapping[str, Any], redis_timeout: float) -> list[Finding]:
    """Everything `check` reports for these settings (a Flask config), in the order of CHECKS.
    Asks each Redis named there about its persistence, waiting at most `redis_timeout` per step."""
    found = [finding for check in CHECKS for finding in check(config)]
    for setting, url in _redis_urls(config):
        found.extend(redis_persistence(setting, url, redis_timeout))
    return found


# --- the checks: each takes the config and yields findings ----------------------------------------


def _debug(config) -> Iterable[Finding]:
    if config["DEBUG"]:
        yield Finding("FLASK_DEBUG", ERROR, "debug is on: the service accepts the built-in SECRET_KEY and serves "
                      "every email it sent at /dev/mail.", "unset FLASK_DEBUG (or set it to 0).")


def _secret_key(config) -> Iterable[Finding]:
    key = config["SECRET_KEY"]
    if key == DEFAULT_SECRET_KEY:
        yield Finding("SECRET_KEY", ERROR, "the built-in development key: anyone can forge confirmation and "
                      "unsubscribe links and console sessions with it (the service refuses to start with it "
                      "outside debug).", NEW_SECRET)
    elif len(key) < MIN_SECRET_KEY_LENGTH:
        yield Finding("SECRET_KEY", ERROR, f"{len(key)} characters: short enough to guess from any link it "
                      f"signed.", f"at least {MIN_SECRET_KEY_LENGTH} random characters: {NEW_SECRET}")


def _base_url(config) -> Iterable[Finding]:
    url = urlsplit(config["BASE_URL"])
    fix = "BASE_URL=https://news.example.org (the public address, served over TLS)."
    if url.scheme != "https":
        yield Finding("BASE_URL", ERROR, f"{url.scheme or 'no scheme'}, not https: links in emails and console "
                      "logins travel in clear text, and session cookies are not Secure.", fix)
    if _is_local_host(url.hostname):
        yield Finding("BASE_URL", ERROR, f"{url.hostname or 'no host'}: links in emails lead readers to their "
                      "own machine.", fix)


def _mail_from(config) -> Iterable[Finding]:
    address = parseaddr(config["MAIL_FROM"])[1]
    domain = address.rpartition("@")[2].lower()
    if "@" not in address or _is_local_host(domain) or "." not in domain:
        yield Finding("MAIL_FROM", ERROR, f"{address or config['MAIL_FROM']!r} is not an address at a public "
                      "domain: receivers refuse such mail or file it as spam, and replies go nowhere.",
                      "MAIL_FROM='Example News <news@example.org>' (a domain with SPF, DKIM and DMARC records).")


def _postal_address(config) -> Iterable[Finding]:
    if config["MAIL_POSTAL_ADDRESS"] == POSTAL_ADDRESS_PLACEHOLDER:
        yield Finding("MAIL_POSTAL_ADDRESS", ERROR, "the placeholder: every digest must carry the sender's postal "
                      "address (CAN-SPAM), and outside debug digests refuse to send without one.",
                      "MAIL_POSTAL_ADDRESS='Example News Ltd, 1 High Street, Springfield'.")


def _smtp(config) -> Iterable[Finding]:
    from ..infra.smtp import parse_smtp_urls

    try:
        parse_smtp_urls(config["SMTP_URL"])
    except ValueError as error:
        yield Finding("SMTP_URL", ERROR, f"{error} (the service refuses to start).",
                      "SMTP_URL=smtp+starttls://user:password@relay.example.org:587")
        return
    if config["SMTP_URL"] == _DEFAULTS["SMTP_URL"]:
        yield Finding("SMTP_URL", ERROR, "the development sink of `flask dev`: no mail reaches anyone.",
                      "SMTP_URL=smtp+starttls://user:password@relay.example.org:587 (your relay).")


def _dkim(config) -> Iterable[Finding]:
    from ..mail.dkim import DkimConfigurationError, signer_from_config

    names = "DKIM_SELECTOR, DKIM_DOMAIN, DKIM_PRIVATE_KEY_PATH"
    from_domain = parseaddr(config["MAIL_FROM"])[1].rpartition("@")[2].lower()
    try:
        signer = signer_from_config(config, from_domain or "localhost")
    except DkimConfigurationError as error:
        yield Finding(names, ERROR, f"{error} (the service refuses to start).", "point them at a readable key.")
        return
    if signer is None:
        yield Finding(names, ERROR, "unset, so nothing is DKIM-signed: Gmail and Yahoo require DKIM of bulk "
                      "senders and refuse or junk unsigned mail.",
                      "openssl genrsa -out dkim.pem 2048; publish its public key at SELECTOR._domainkey.DOMAIN; "
                      "set all three.")
        return
    domain = config["DKIM_DOMAIN"].strip().lower()
    if not (from_domain == domain or from_domain.endswith("." + domain)):
        yield Finding("DKIM_DOMAIN", WARNING, f"{domain} is not the From domain {from_domain}: DMARC will not pass "
                      "on DKIM.", "sign with the From domain (or a parent of it).")


def _dev_mail_viewer(config) -> Iterable[Finding]:
    if config["DEV_MAIL_VIEWER"]:
        yield Finding("DEV_MAIL_VIEWER", ERROR, "on: /dev/mail shows anyone every email sent, confirmation links "
                      "included.", "unset DEV_MAIL_VIEWER.")


def _schedule(config) -> Iterable[Finding]:
    from .schedule import parse_schedule

    if config["DIGEST_SCHEDULE"]:
        try:
            parse_schedule(config["DIGEST_SCHEDULE"], config["DIGEST_TIMEZONE"])
        except InvalidInput as error:
            yield Finding(error.field, ERROR, f"{error.message} (the service refuses to start).",
                          "a cron expression such as '0 7 * * *' and a zone such as Europe/Paris.")


def _sqlite(config) -> Iterable[Finding]:
    if not config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        return
    reasons = []
    if config["WEB_CONCURRENCY"] > 1:
        reasons.append(f"WEB_CONCURRENCY={config['WEB_CONCURRENCY']} web processes")
    if config["CELERY_BROKER_URL"].startswith(("redis://", "rediss://")):
        reasons.append("a Redis broker, whose workers may run on machines that do not have this file")
    if reasons:
        yield Finding("DATABASE_URL", ERROR, f"SQLite with more than one worker ({'; '.join(reasons)}): writers "
                      "queue for one file lock, and a file is only ever on one machine.",
                      "DATABASE_URL=postgresql://user:password@db.example.org/newsletter, then "
                      "`flask --app wsgi db upgrade`.")


def _redis_url(config) -> Iterable[Finding]:
    if not config["REDIS_URL"]:
        broker = "a SQLite file" if config["CELERY_BROKER_URL"].startswith("sqla+sqlite") else "not Redis"
        yield Finding("REDIS_URL", WARNING, f"unset: rate limits and SEND_RATE count per process, nothing journals "
                      f"sent marks, and the broker is {broker}.", "REDIS_URL=redis://redis.example.org:6379/0")


CHECKS: tuple[Callable[[Mapping], Iterable[Finding]], ...] = (
    _debug, _secret_key, _base_url, _mail_from, _postal_address, _smtp, _dkim, _dev_mail_viewer, _schedule,
    _sqlite, _redis_url,
)


# --- Redis: asked, not guessed ---------------------------------------------------------------------


def _redis_urls(config) -> list[tuple[str, str]]:
    named = [("REDIS_URL", config["REDIS_URL"]), ("CELERY_BROKER_URL", config["CELERY_BROKER_URL"])]
    seen, urls = set(), []
    for setting, url in named:
        if url and url.startswith(("redis://", "rediss://")) and url not in seen:
            seen.add(url)
            urls.append((setting, url))
    return urls


PERSISTENCE_FIX = "appendonly yes in redis.conf (live: CONFIG SET appendonly yes, then CONFIG REWRITE)."
LOSS = "a restart empties the queues (the sweepers send again what they held) and the sent journal"


def redis_persistence(setting: str, url: str, timeout: float) -> list[Finding]:
    """What this Redis keeps across a restart: CONFIG GET when allowed, else INFO persistence."""
    where = _where(url)
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        try:
            settings = {name: client.config_get(name).get(name, "")
                        for name in ("appendonly", "save", "maxmemory", "maxmemory-policy")}
        except redis.ResponseError:  # CONFIG renamed or refused (managed Redis): INFO still tells AOF
            aof = client.info("persistence").get("aof_enabled")
            if aof:
                return []
            return [Finding(setting, WARNING, f"Redis at {where} has no append-only file (CONFIG is refused, so "
                            f"snapshots are unknown): {LOSS}.", PERSISTENCE_FIX)]
    except redis.RedisError as error:
        return [Finding(setting, ERROR, f"Redis at {where} does not answer: {error}.",
                        "start it, or correct the URL.")]
    finally:
        client.close()
    found = []
    if settings["appendonly"] != "yes":
        kept = f"snapshots only (save {settings['save']!r}), so {LOSS} back to the last one" if settings["save"] \
            else f"no persistence at all (appendonly no, no save points): {LOSS}"
        found.append(Finding(setting, WARNING, f"Redis at {where} keeps {kept}.", PERSISTENCE_FIX))
    if settings["maxmemory"] not in ("", "0") and settings["maxmemory-policy"] != "noeviction":
        found.append(Finding(setting, WARNING, f"Redis at {where} evicts keys when full "
                             f"(maxmemory-policy {settings['maxmemory-policy']}): queued tasks can vanish.",
                             "maxmemory-policy noeviction."))
    return found


def _where(url: str) -> str:
    parts = urlsplit(url)  # never the password
    return f"{parts.hostname}:{parts.port or 6379}{parts.path or '/0'}"


def _is_local_host(host: str | None) -> bool:
    if not host:
        return True
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith((".localhost", ".localdomain")):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
