"""The data. The schema changes only through migrations/ (a test checks the two never drift)."""

from __future__ import annotations

import enum
from datetime import datetime, timezone

from flask_login import UserMixin
from sqlalchemy import (
    Boolean,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    Integer,
    JSON,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    event,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .extensions import db

# Ids are INTEGER columns: a larger number names no row (and SQLite cannot bind past 2**63).
MAX_ID = 2**31 - 1


class UTCDateTime(TypeDecorator):
    """Aware UTC datetimes in and out, on SQLite (which forgets the zone) as on PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; use aware UTC datetimes")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


def _enum(cls):
    # Stored as plain strings with a CHECK, the same on both databases.
    return Enum(cls, native_enum=False, length=20, values_callable=lambda e: [m.value for m in e],
                create_constraint=True, name=cls.__name__.lower())


class SubscriberStatus(str, enum.Enum):
    PENDING = "pending"
    CONFIRMED = "confirmed"
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"
    COMPLAINED = "complained"


class ConsentKind(str, enum.Enum):
    REQUESTED = "requested"
    CONFIRMED = "confirmed"
    UNSUBSCRIBED = "unsubscribed"
    IMPORTED = "imported"


class OutboundStatus(str, enum.Enum):
    PENDING = "pending"
    DEFERRED = "deferred"
    SENT = "sent"
    FAILED = "failed"


class DeliveryStatus(str, enum.Enum):
    PENDING = "pending"
    DEFERRED = "deferred"
    SENT = "sent"
    FAILED = "failed"
    SKIPPED = "skipped"


class Role(str, enum.Enum):
    VIEWER = "viewer"  # reads
    EDITOR = "editor"  # also manages articles and digests, and sends
    ADMIN = "admin"  # also manages subscribers' data and operators

    @property
    def rank(self) -> int:
        return ("viewer", "editor", "admin").index(self.value)

    def allows(self, needed: Role) -> bool:
        return self.rank >= needed.rank


class DigestStatus(str, enum.Enum):
    DRAFT = "draft"
    SCHEDULED = "scheduled"
    SENDING = "sending"
    PAUSED = "paused"
    DONE = "done"
    CANCELLED = "cancelled"


# A digest in one of these states has gone (or is going) out: its articles are no longer "new".
DIGEST_SENT_STATES = (DigestStatus.SENDING, DigestStatus.PAUSED, DigestStatus.DONE)


class TermsVersion(db.Model):
    """Every version of the consent text, kept forever: a consent points at the text it agreed to."""

    __tablename__ = "terms_version"

    id: Mapped[int] = mapped_column(primary_key=True)
    version: Mapped[int] = mapped_column(Integer, unique=True)
    text: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    published_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Subscriber(db.Model):
    __tablename__ = "subscriber"

    id: Mapped[int] = mapped_column(primary_key=True)
    # Normalised (see newsletter.validation.normalize_email): the unique key is case-insensitive.
    email: Mapped[str] = mapped_column(String(254), unique=True)
    name: Mapped[str | None] = mapped_column(String(100))
    status: Mapped[SubscriberStatus] = mapped_column(_enum(SubscriberStatus), index=True)
    # Binds confirmation links to one opt-in round: a new round (after unsubscribing) gets a new one,
    # so an old confirmation link can never resubscribe anybody.
    optin_nonce: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    unsubscribed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    events: Mapped[list[ConsentEvent]] = relationship(
        back_populates="subscriber", order_by="ConsentEvent.id"
    )


class ConsentEvent(db.Model):
    """The consent ledger: append-only (updates are refused below), the proof GDPR Art. 7(1) asks for."""

    __tablename__ = "consent_event"

    id: Mapped[int] = mapped_column(primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscriber.id"), index=True)
    kind: Mapped[ConsentKind] = mapped_column(_enum(ConsentKind))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ip: Mapped[str | None] = mapped_column(String(45))
    user_agent: Mapped[str | None] = mapped_column(String(512))
    source: Mapped[str | None] = mapped_column(String(512))
    terms_version_id: Mapped[int | None] = mapped_column(ForeignKey("terms_version.id"))
    terms_sha256: Mapped[str | None] = mapped_column(String(64))
    checkbox_value: Mapped[str | None] = mapped_column(String(100))

    subscriber: Mapped[Subscriber] = relationship(back_populates="events")
    terms: Mapped[TermsVersion | None] = relationship()


@event.listens_for(ConsentEvent, "before_update")
def _ledger_is_append_only(mapper, connection, target):
    raise RuntimeError("consent events are append-only; record a new event instead")


class SignupRequest(db.Model):
    """A public signup as it was sent, until a worker decides it (services/signup_requests.py).

    The request writes this row alone, the same way for every address, so its answer takes as long
    whoever is subscribed; the decision, which reads who is, happens after the answer. It holds all
    the consent ledger needs: the time, place and terms of the request, and the raw checkbox value.
    """

    __tablename__ = "signup_request"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254))  # normalised
    name: Mapped[str | None] = mapped_column(String(100))
    checkbox_value: Mapped[str] = mapped_column(String(100))
    terms_version_id: Mapped[int] = mapped_column(ForeignKey("terms_version.id"))
    ip: Mapped[str | None] = mapped_column(String(45))
    user_agent: Mapped[str | None] = mapped_column(String(512))
    source: Mapped[str | None] = mapped_column(String(512))
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)  # the sweeper's order


class LeasedSend:
    """The columns of a row that workers lease, send, and retry or mark sent: the outbox's and a delivery's.

    A mixin's columns follow the model's own, so these stay the last columns of both tables."""

    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(String(500))


class OutboundEmail(LeasedSend, db.Model):
    """A transactional email (confirmation), written in the transaction that decided to send it.

    The queue only wakes a worker; this row is the truth. A worker leases the row, sends, and marks
    it sent after the relay's 250; a sweeper re-enqueues rows whose message was lost.
    """

    __tablename__ = "outbound_email"
    __table_args__ = (Index("ix_outbound_email_due", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    subscriber_id: Mapped[int | None] = mapped_column(ForeignKey("subscriber.id"), index=True)
    recipient: Mapped[str] = mapped_column(String(254))
    message: Mapped[str] = mapped_column(Text)  # the whole RFC 5322 message, as it will be sent
    status: Mapped[OutboundStatus] = mapped_column(_enum(OutboundStatus))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Article(db.Model):
    """One article of the site. `key` is its feed guid, or its canonical URL when it has none."""

    __tablename__ = "article"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(2048), unique=True)
    url: Mapped[str] = mapped_column(String(2048))
    title: Mapped[str] = mapped_column(String(500))  # plain text
    summary_html: Mapped[str] = mapped_column(Text, default="")  # sanitised HTML
    author: Mapped[str | None] = mapped_column(String(200))
    image_url: Mapped[str | None] = mapped_column(String(2048))
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    source: Mapped[str | None] = mapped_column(String(2048))  # the feed URL, "api" or the file name
    hidden: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class FeedState(db.Model):
    """What the last fetch of a feed learned: validators for the next conditional GET."""

    __tablename__ = "feed_state"

    id: Mapped[int] = mapped_column(primary_key=True)
    url: Mapped[str] = mapped_column(String(2048), unique=True)
    etag: Mapped[str | None] = mapped_column(String(500))
    last_modified: Mapped[str | None] = mapped_column(String(100))
    fetched_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(String(500))


class FetchRunStatus(str, enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    NOT_QUEUED = "not_queued"  # the broker was out of reach: nothing was fetched


class FeedFetchRun(db.Model):
    """One "fetch feeds now" from the console: queued by the web, done by a worker, each feed's
    report kept for the page that waits on it."""

    __tablename__ = "feed_fetch_run"

    id: Mapped[int] = mapped_column(primary_key=True)
    operator_id: Mapped[int | None] = mapped_column(ForeignKey("operator.id"))
    ip: Mapped[str | None] = mapped_column(String(45))
    urls: Mapped[list] = mapped_column(JSON)
    status: Mapped[FetchRunStatus] = mapped_column(_enum(FetchRunStatus))
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    reports: Mapped[list | None] = mapped_column(JSON)  # [{"line": ..., "failed": ...}], in the order of urls

    operator: Mapped[Operator | None] = relationship()


class Digest(db.Model):
    __tablename__ = "digest"

    id: Mapped[int] = mapped_column(primary_key=True)
    subject: Mapped[str] = mapped_column(String(200))
    intro: Mapped[str | None] = mapped_column(Text)
    status: Mapped[DigestStatus] = mapped_column(_enum(DigestStatus), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    scheduled_for: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    items: Mapped[list[DigestArticle]] = relationship(
        back_populates="digest", order_by="DigestArticle.position", cascade="all, delete-orphan"
    )

    @property
    def articles(self) -> list[Article]:
        return [item.article for item in self.items]


class DigestArticle(db.Model):
    """The ordered articles a digest carries."""

    __tablename__ = "digest_article"

    digest_id: Mapped[int] = mapped_column(ForeignKey("digest.id"), primary_key=True)
    article_id: Mapped[int] = mapped_column(ForeignKey("article.id"), primary_key=True, index=True)
    position: Mapped[int] = mapped_column(Integer)

    digest: Mapped[Digest] = relationship(back_populates="items")
    article: Mapped[Article] = relationship()


class ScheduleState(db.Model):
    """The last schedule slot beat handled, so missed slots collapse into one digest, never a burst."""

    __tablename__ = "schedule_state"

    name: Mapped[str] = mapped_column(String(50), primary_key=True)
    last_slot: Mapped[datetime] = mapped_column(UTCDateTime)


class Delivery(LeasedSend, db.Model):
    """One digest to one subscriber: the unit of bulk delivery, never created twice (UNIQUE).

    pending -> (leased by a worker) -> sent | deferred (retry at next_attempt_at) | failed | skipped
    """

    __tablename__ = "delivery"
    __table_args__ = (
        UniqueConstraint("digest_id", "subscriber_id"),
        # Claims walk one digest's id range looking for due rows.
        Index("ix_delivery_claim", "digest_id", "status", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    digest_id: Mapped[int] = mapped_column(ForeignKey("digest.id"))
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscriber.id", ondelete="CASCADE"), index=True)
    status: Mapped[DeliveryStatus] = mapped_column(_enum(DeliveryStatus))
    attempts: Mapped[int] = mapped_column(Integer, default=0)


class Suppression(db.Model):
    """Addresses never to be mailed again, kept only as a keyed HMAC: nothing readable remains."""

    __tablename__ = "suppression"

    id: Mapped[int] = mapped_column(primary_key=True)
    address_hmac: Mapped[str] = mapped_column(String(64), unique=True)
    reason: Mapped[str] = mapped_column(String(50))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Operator(UserMixin, db.Model):
    """A console user. Passwords are argon2id hashes; repeated failures lock the account a while."""

    __tablename__ = "operator"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[Role] = mapped_column(_enum(Role))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # In every session cookie; raising it (logout, new password, deactivation) ends them all.
    session_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    @property
    def is_active(self) -> bool:
        """Flask-Login's: a deactivated operator cannot log in, and their session ends."""
        return self.active

    def get_id(self) -> str:
        return f"{self.id}:{self.session_version}"


class ApiToken(db.Model):
    """A per-operator API token. Only its SHA-256 is stored; the token is shown once, at creation."""

    __tablename__ = "api_token"

    id: Mapped[int] = mapped_column(primary_key=True)
    operator_id: Mapped[int] = mapped_column(ForeignKey("operator.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(12))  # to recognise it in lists
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    operator: Mapped[Operator] = relationship()


class AuditEvent(db.Model):
    """Who did what, when: every state change an operator makes in the console, the API or the CLI."""

    __tablename__ = "audit_event"

    id: Mapped[int] = mapped_column(primary_key=True)
    operator_id: Mapped[int | None] = mapped_column(ForeignKey("operator.id"), index=True)
    action: Mapped[str] = mapped_column(String(50))
    target: Mapped[str | None] = mapped_column(String(200))
    detail: Mapped[str | None] = mapped_column(Text)
    ip: Mapped[str | None] = mapped_column(String(45))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)

    operator: Mapped[Operator | None] = relationship()


class UsedFormToken(db.Model):
    """The nonce of a signup form token that was sent back once: a form signs up one address."""

    __tablename__ = "used_form_token"

    nonce: Mapped[str] = mapped_column(String(32), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)  # the token is refused after it anyway


class ImportState(str, enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"  # stopped after repeated errors: what was committed is in the counts


class ImportJob(db.Model):
    """A console CSV upload, imported by workers in batches. Each batch commits with the checkpoint
    (rows_read and the counts), so a run that dies resumes from its last batch; the file is kept
    only until the job ends (it holds addresses an erasure must not leave behind)."""

    __tablename__ = "import_job"
    __table_args__ = (Index("ix_import_job_open", "state", "heartbeat_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    operator_id: Mapped[int | None] = mapped_column(ForeignKey("operator.id"))
    ip: Mapped[str | None] = mapped_column(String(45))
    filename: Mapped[str] = mapped_column(String(255))
    consent_source: Mapped[str] = mapped_column(String(512))
    confirmed: Mapped[bool] = mapped_column(Boolean)
    state: Mapped[ImportState] = mapped_column(_enum(ImportState))
    data: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)  # the uploaded file
    total_rows: Mapped[int] = mapped_column(Integer)
    rows_read: Mapped[int] = mapped_column(Integer, default=0)  # rows of the file done by committed batches
    imported: Mapped[int] = mapped_column(Integer, default=0)
    skipped_existing: Mapped[int] = mapped_column(Integer, default=0)
    skipped_suppressed: Mapped[int] = mapped_column(Integer, default=0)
    skipped_duplicate: Mapped[int] = mapped_column(Integer, default=0)
    bad_rows: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    failed_runs: Mapped[int] = mapped_column(Integer, default=0)  # runs in a row that ended without a batch
    last_error: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime)  # the last claim or committed batch
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    operator: Mapped[Operator | None] = relationship()


class ImportBadRow(db.Model):
    """A row of an import that was not imported, by the line it starts on: written with its batch."""

    __tablename__ = "import_bad_row"

    job_id: Mapped[int] = mapped_column(ForeignKey("import_job.id"), primary_key=True)
    line: Mapped[int] = mapped_column(Integer, primary_key=True)
    reason: Mapped[str] = mapped_column(String(500))
