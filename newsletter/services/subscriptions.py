"""The subscriber lifecycle: signup with recorded consent, double opt-in, unsubscribe.

Every decision is written in one transaction with its consent event and, when mail is due, the
email itself (OutboundEmail); the queue is told only after the commit. Public signups reach the
decision through signup_requests, after their answer.
"""

from __future__ import annotations

import enum
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import current_app, render_template
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from .. import metrics, tokens
from ..errors import InvalidInput, InvalidToken, UsedToken
from ..extensions import db
from ..mail.compose import build_message, deterministic_message_id, outgoing_bytes
from ..models import (
    ConsentEvent,
    ConsentKind,
    OutboundEmail,
    OutboundStatus,
    Subscriber,
    SubscriberStatus,
    TermsVersion,
)
from ..queue import SEND_OUTBOUND, enqueue
from ..urls import absolute_url
from ..validation import clean_name, consent_given, normalize_email, raw_consent_value
from . import suppression
from ..times import iso_z

CONSENT_REQUIRED = "Please tick the box to agree to the terms: we can only send the newsletter with your consent."


@dataclass(frozen=True)
class Context:
    """Where a request came from: recorded with every consent event."""

    ip: str | None
    user_agent: str | None
    source: str | None

    def fields(self) -> dict:
        return {"ip": (self.ip or "")[:45] or None, "user_agent": (self.user_agent or "")[:512] or None,
                "source": (self.source or "")[:512] or None}


class SignupOutcome(enum.StrEnum):
    """What a signup did, for the operator's eyes only: the public answer is the same for all."""

    CREATED = "created"  # a new pending subscriber
    RESTARTED = "restarted"  # known, pending or unsubscribed: the opt-in starts again
    UNCHANGED = "unchanged"  # confirmed, bounced or complained: nothing changes
    SUPPRESSED = "suppressed"  # never to be mailed again (hard bounce, complaint, erasure)


def request_signup(email, name, consent, terms: TermsVersion, context: Context, now: datetime) -> SignupOutcome:
    """Start (or restart) double opt-in for an address, deciding at once: for callers who may know
    the outcome (an operator). The public's signups are recorded first and decided after their
    answer (signup_requests), so that not even an answer's time depends on it.

    Raises InvalidInput, and changes nothing, for bad input or consent that is not a real yes.
    """
    address, name, checkbox_value = checked_signup(email, name, consent)
    outcome = commit_signup(lambda: decide_signup(address, name, checkbox_value, terms, context, now))
    metrics.record_signup("accepted")
    return outcome


def checked_signup(email, name, consent) -> tuple[str, str | None, str]:
    """The normalised address, the cleaned name and the raw checkbox value, the same work for any
    address. Raises InvalidInput (counted as refused) for bad input or consent that is not a real yes."""
    try:
        address = normalize_email(email)
        name = clean_name(name)
        if not consent_given(consent):
            raise InvalidInput("consent", CONSENT_REQUIRED)
    except InvalidInput as error:
        metrics.record_signup("refused", error.field)
        raise
    return address, name, raw_consent_value(consent)


Decision = tuple[SignupOutcome, int | None]  # the outcome, and the confirmation email to send (None: no mail)


def commit_signup(decide: Callable[[], Decision | None]) -> SignupOutcome | None:
    """Run a decision in a transaction and commit it; then wake a worker for its email, if any."""
    try:
        decision = decide()
        db.session.commit()
    except IntegrityError:
        # The same new address signed up at the same moment in another transaction: its row stands now.
        db.session.rollback()
        decision = decide()
        db.session.commit()
    if decision is None:
        return None
    outcome, outbound_id = decision
    if outbound_id is not None:
        enqueue(SEND_OUTBOUND, outbound_id)
    return outcome


def decide_signup(address: str, name: str | None, checkbox_value: str, terms: TermsVersion, context: Context,
                  now: datetime) -> Decision:
    """The decision on one checked signup, flushed, not committed (commit_signup commits it)."""
    if suppression.is_suppressed(address):
        return SignupOutcome.SUPPRESSED, None  # never mailed again: no mail, and the same answer
    subscriber = db.session.scalar(select(Subscriber).where(Subscriber.email == address))
    if subscriber is None:
        outcome = SignupOutcome.CREATED
        subscriber = Subscriber(email=address, name=name, created_at=now)
        db.session.add(subscriber)
        _start_optin(subscriber)
    elif subscriber.status is SubscriberStatus.UNSUBSCRIBED:
        outcome = SignupOutcome.RESTARTED
        _start_optin(subscriber)  # coming back goes through the whole opt-in again
        subscriber.name = name or subscriber.name
    elif subscriber.status is SubscriberStatus.PENDING:
        outcome = SignupOutcome.RESTARTED
    else:
        return SignupOutcome.UNCHANGED, None  # confirmed (or bounced, complained): nothing tells

    db.session.add(ConsentEvent(
        subscriber=subscriber, kind=ConsentKind.REQUESTED, occurred_at=now,
        terms_version_id=terms.id, terms_sha256=terms.sha256, checkbox_value=checkbox_value,
        **context.fields(),
    ))
    db.session.flush()
    outbound = None
    if not _confirmation_sent_recently(subscriber, now):
        outbound = queue_confirmation(subscriber, now)
    return outcome, outbound.id if outbound else None


def _start_optin(subscriber: Subscriber) -> None:
    subscriber.status = SubscriberStatus.PENDING
    subscriber.optin_nonce = secrets.token_hex(16)
    subscriber.confirmed_at = subscriber.unsubscribed_at = None


def _confirmation_sent_recently(subscriber: Subscriber, now: datetime) -> bool:
    # Parallel signups of one address decide one at a time: the row lock waits for the other's
    # commit, and the query after it (a new snapshot) sees that one's email. NO KEY: the consent
    # rows inserted above hold KEY SHARE locks on it. SQLite has one writer at a time already.
    db.session.execute(select(Subscriber.id).where(Subscriber.id == subscriber.id).with_for_update(key_share=True))
    since = now - timedelta(seconds=current_app.config["CONFIRM_RESEND_SECONDS"])
    return db.session.scalar(
        select(OutboundEmail.id).where(
            OutboundEmail.subscriber_id == subscriber.id,
            OutboundEmail.kind == "confirm",
            OutboundEmail.created_at > since,
        ).limit(1)
    ) is not None


def queue_confirmation(subscriber: Subscriber, now: datetime) -> OutboundEmail:
    outbound = OutboundEmail(
        kind="confirm", subscriber_id=subscriber.id, recipient=subscriber.email, message="",
        status=OutboundStatus.PENDING, attempts=0, created_at=now, next_attempt_at=now,
    )
    db.session.add(outbound)
    db.session.flush()  # the id goes into the Message-ID
    confirm_token = tokens.make(tokens.CONFIRM, {"s": subscriber.id, "n": subscriber.optin_nonce}, now)
    unsubscribe_token = unsubscribe_token_for(subscriber, now)
    values = {
        "subscriber": subscriber,
        "site_name": current_app.config["SITE_NAME"],
        "confirm_url": absolute_url("public.confirm", token=confirm_token),
        "unsubscribe_url": absolute_url("public.unsubscribe", token=unsubscribe_token),
        "valid_days": max(1, current_app.config["CONFIRM_TOKEN_MAX_AGE"] // 86400),
    }
    message = build_message(
        to=subscriber.email, to_name=subscriber.name,
        subject=f"Please confirm your subscription to {current_app.config['SITE_NAME']}",
        text=render_template("email/confirm.txt", **values),
        html=render_template("email/confirm.html", **values),
        message_id=deterministic_message_id("outbound", outbound.id),
        date=now, unsubscribe_url=values["unsubscribe_url"], unsubscribe_token=unsubscribe_token,
        headers={"Auto-Submitted": "auto-generated"},
    )
    outbound.message = outgoing_bytes(message, now).decode("ascii")  # signed now: a retry sends these bytes
    return outbound


def unsubscribe_token_for(subscriber: Subscriber, now: datetime) -> str:
    return tokens.make(tokens.UNSUBSCRIBE, {"s": subscriber.id}, now)


def subscriber_for_confirm_token(token: str, now: datetime) -> Subscriber:
    """The pending subscriber a confirmation link is for.

    Raises UsedToken for a round already confirmed (harmless), InvalidToken otherwise.
    """
    payload = tokens.read(tokens.CONFIRM, token, now, max_age=current_app.config["CONFIRM_TOKEN_MAX_AGE"])
    subscriber = _subscriber_from(payload)
    if subscriber.optin_nonce == payload.get("n"):
        if subscriber.status is SubscriberStatus.PENDING:
            return subscriber
        if subscriber.status is SubscriberStatus.CONFIRMED:
            raise UsedToken("This link was already used: your subscription is confirmed.")
    raise InvalidToken("This confirmation link is no longer valid. Sign up again to get a new one.")


def confirm(token: str, context: Context, now: datetime) -> Subscriber:
    subscriber = subscriber_for_confirm_token(token, now)
    subscriber.status = SubscriberStatus.CONFIRMED
    subscriber.confirmed_at = now
    db.session.add(ConsentEvent(subscriber=subscriber, kind=ConsentKind.CONFIRMED, occurred_at=now,
                                **context.fields()))
    db.session.commit()
    metrics.record_confirmation()
    return subscriber


def subscriber_for_unsubscribe_token(token: str, now: datetime) -> Subscriber:
    return _subscriber_from(tokens.read(tokens.UNSUBSCRIBE, token, now))


def unsubscribe(token: str, context: Context, now: datetime) -> Subscriber:
    """Leave the list. Harmless to repeat: a second click records nothing new."""
    subscriber = subscriber_for_unsubscribe_token(token, now)
    if subscriber.status in (SubscriberStatus.PENDING, SubscriberStatus.CONFIRMED):
        subscriber.status = SubscriberStatus.UNSUBSCRIBED
        subscriber.unsubscribed_at = now
        subscriber.optin_nonce = None  # old confirmation links die with the subscription
        db.session.add(ConsentEvent(subscriber=subscriber, kind=ConsentKind.UNSUBSCRIBED, occurred_at=now,
                                    **context.fields()))
        db.session.commit()
    return subscriber


def _subscriber_from(payload) -> Subscriber:
    subscriber_id = payload.get("s") if isinstance(payload, dict) else None
    subscriber = db.session.get(Subscriber, subscriber_id) if isinstance(subscriber_id, int) else None
    if subscriber is None:
        raise InvalidToken("This link is not valid.")
    return subscriber


def consent_record(email: str) -> dict:
    """Status and the whole consent history of one address: the proof of consent, as data."""
    subscriber = db.session.scalar(select(Subscriber).where(Subscriber.email == normalize_email(email)))
    if subscriber is None:
        raise InvalidInput("email", f"No subscriber with the address {email!r}.")
    return {
        "email": subscriber.email,
        "name": subscriber.name,
        "status": subscriber.status.value,
        "created_at": iso_z(subscriber.created_at),
        "confirmed_at": iso_z(subscriber.confirmed_at),
        "unsubscribed_at": iso_z(subscriber.unsubscribed_at),
        "events": [event_record(event) for event in subscriber.events],
    }


def event_record(event: ConsentEvent) -> dict:
    """One consent event as data: what, when, from where, and the exact terms agreed to."""
    return {
        "kind": event.kind.value,
        "at": iso_z(event.occurred_at),
        "ip": event.ip,
        "user_agent": event.user_agent,
        "source": event.source,
        "terms_version": event.terms.version if event.terms else None,
        "terms_sha256": event.terms_sha256,
        "checkbox_value": event.checkbox_value,
    }

