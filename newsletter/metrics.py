"""What the service counts, for Prometheus at GET /metrics (served when METRICS_ENABLED=1).

Counters live in the process that counts. With PROMETHEUS_MULTIPROC_DIR set in the environment
before start (gunicorn workers, Celery worker processes, one directory per host, emptied at each
deploy) every process writes its counters to files there, and /metrics sums all of them.
Backlogs and the send rate are read from the database when scraped: the database is the truth.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime, timedelta

from flask import current_app
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from .extensions import db
from .models import Delivery, DeliveryStatus, Digest, DigestStatus, OutboundEmail, OutboundStatus, SignupRequest

log = logging.getLogger(__name__)

CONTENT_TYPE = CONTENT_TYPE_LATEST
SIGNUP_OUTCOMES = ("accepted", "refused")
DELIVERY_OUTCOMES = ("sent", "deferred", "failed", "skipped")
OUTBOUND_OUTCOMES = ("sent", "deferred", "failed")
SMTP_REPLY_CLASSES = ("2xx", "4xx", "5xx", "connection_error")
SEND_RATE_WINDOW = timedelta(seconds=60)

_multiproc_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
if _multiproc_dir:
    os.makedirs(_multiproc_dir, exist_ok=True)  # prometheus_client writes there from the first metric on

# registry=None: each scrape builds its own registry (one per app and mode), never the global one.
SIGNUPS = Counter("newsletter_signups", "Signups by outcome; a refusal carries its reason.",
                  ["outcome", "reason"], registry=None)
CONFIRMATIONS = Counter("newsletter_confirmations", "Subscriptions confirmed by their double opt-in link.",
                        registry=None)
DELIVERIES = Counter("newsletter_deliveries", "Digest deliveries handled by workers, by outcome.", ["outcome"],
                     registry=None)
OUTBOUND = Counter("newsletter_outbound_emails", "Transactional emails (confirmations) handled, by outcome.",
                   ["outcome"], registry=None)
SMTP_REPLIES = Counter("newsletter_smtp_replies", "Final replies of SMTP relays to a message, by class.",
                       ["class"], registry=None)
COUNTERS = (SIGNUPS, CONFIRMATIONS, DELIVERIES, OUTBOUND, SMTP_REPLIES)

# Every series exists from the start at 0, so rate() sees the first event.
SIGNUPS.labels("accepted", "")
for _outcome in DELIVERY_OUTCOMES:
    DELIVERIES.labels(_outcome)
for _outcome in OUTBOUND_OUTCOMES:
    OUTBOUND.labels(_outcome)
for _reply in SMTP_REPLY_CLASSES:
    SMTP_REPLIES.labels(_reply)


def _known(value: str, allowed: tuple[str, ...], what: str) -> str:
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}: one of {', '.join(allowed)}")
    return value


def record_signup(outcome: str, reason: str = "") -> None:
    """`accepted` (whatever the address: the answer is the same), or `refused` with why (the input field
    that was wrong, `honeypot`, `too_fast`, `form_token`, `rate_limited`)."""
    _known(outcome, SIGNUP_OUTCOMES, "signup outcome")
    if (outcome == "refused") != bool(reason):
        raise ValueError("a refused signup needs a reason, an accepted one has none")
    SIGNUPS.labels(outcome, reason).inc()


def record_confirmation() -> None:
    CONFIRMATIONS.inc()


def record_delivery(outcome: str, count: int = 1) -> None:
    """One delivery's outcome in the send loop; `count` for many at once (cancel skips the open rows)."""
    DELIVERIES.labels(_known(outcome, DELIVERY_OUTCOMES, "delivery outcome")).inc(count)


def record_outbound(outcome: str) -> None:
    OUTBOUND.labels(_known(outcome, OUTBOUND_OUTCOMES, "outbound outcome")).inc()


def smtp_reply_class(code: int | None) -> str:
    """2xx, 4xx, 5xx; anything else (no reply at all, a dropped line, a garbled reply) is a connection error."""
    return {2: "2xx", 4: "4xx", 5: "5xx"}.get(code // 100 if isinstance(code, int) else 0, "connection_error")


def record_smtp_reply(code: int | None) -> None:
    SMTP_REPLIES.labels(smtp_reply_class(code)).inc()


class DatabaseGauges:
    """Backlogs and the send rate, counted in the database at scrape time (inside the app context)."""

    def __init__(self, now: datetime):
        self.now = now

    def collect(self):
        try:
            gauges = self._gauges()
        except SQLAlchemyError as error:  # a scrape must still answer with the counters
            db.session.rollback()
            log.warning("metrics: cannot count the backlog in the database: %s", error)
            return
        yield from gauges

    def _gauges(self) -> list:
        outbox = GaugeMetricFamily("newsletter_outbox_backlog", "Transactional emails waiting to be sent.",
                                   labels=["status"])
        waiting = dict(db.session.execute(
            select(OutboundEmail.status, func.count())
            .where(OutboundEmail.status.in_([OutboundStatus.PENDING, OutboundStatus.DEFERRED]))
            .group_by(OutboundEmail.status)
        ).all())
        for status in (OutboundStatus.PENDING, OutboundStatus.DEFERRED):
            outbox.add_metric([status.value], waiting.get(status, 0))

        signups = GaugeMetricFamily("newsletter_signup_backlog", "Public signups recorded and not yet decided.",
                                    value=db.session.scalar(select(func.count()).select_from(SignupRequest)))

        # Through the digests being sent: the delivery index starts with digest_id, not status.
        active = select(Digest.id).where(Digest.status.in_([DigestStatus.SENDING, DigestStatus.PAUSED]))
        backlog = GaugeMetricFamily("newsletter_delivery_backlog", "Digest deliveries still to send.",
                                    labels=["status"])
        open_rows = dict(db.session.execute(
            select(Delivery.status, func.count())
            .where(Delivery.digest_id.in_(active),
                   Delivery.status.in_([DeliveryStatus.PENDING, DeliveryStatus.DEFERRED]))
            .group_by(Delivery.status)
        ).all())
        for status in (DeliveryStatus.PENDING, DeliveryStatus.DEFERRED):
            backlog.add_metric([status.value], open_rows.get(status, 0))

        # No digest sends past its expiry after it started: those are the digests that can have sent now.
        started = self.now - timedelta(seconds=current_app.config["DELIVERY_EXPIRY_SECONDS"])
        recent = select(Digest.id).where(Digest.sent_at >= started)
        sent_recently = db.session.scalar(
            select(func.count()).select_from(Delivery)
            .where(Delivery.digest_id.in_(recent), Delivery.status == DeliveryStatus.SENT,
                   Delivery.sent_at >= self.now - SEND_RATE_WINDOW)
        )
        rate = GaugeMetricFamily("newsletter_send_rate_per_second",
                                 "Digest messages sent per second over the last minute, all workers together.",
                                 value=sent_recently / SEND_RATE_WINDOW.total_seconds())
        db.session.rollback()  # read only: end the transaction the counts opened
        return [signups, outbox, backlog, rate]


def exposition(now: datetime, multiproc_dir: str | None = None) -> bytes:
    """The text a Prometheus scrape gets: the counters (this process's, or every process's files in
    multiproc_dir) and the gauges from the database."""
    registry = CollectorRegistry()
    if multiproc_dir:
        from prometheus_client.multiprocess import MultiProcessCollector

        MultiProcessCollector(registry, path=multiproc_dir)
    else:
        for counter in COUNTERS:
            registry.register(counter)
    registry.register(DatabaseGauges(now))
    return generate_latest(registry)


def mark_process_dead(pid: int, multiproc_dir: str | None) -> None:
    """A gone process's live gauges leave /metrics (its counters stay: they are history)."""
    if multiproc_dir:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, multiproc_dir)
