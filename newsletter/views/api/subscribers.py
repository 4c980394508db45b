"""/api/v1/subscribers: list, read, add with consent (double opt-in), erase (GDPR Art. 17)."""

from __future__ import annotations

from flask import g, jsonify, request, url_for
from sqlalchemy import select

from ...auth import api_requires
from ...clock import now
from ...errors import InvalidInput
from ...extensions import db
from ...models import Role, Subscriber, SubscriberStatus
from ...services import gdpr, subscriptions, suppression
from ...services.terms import current_terms
from ...validation import reject_control_characters
from ..context import request_context
from . import parsing, schemas
from .blueprint import audit, bp
from .limits import DEFAULT_PAGE, MAX_EMAIL_LENGTH, MAX_ID, MAX_PAGE
from .representations import error, page_json, subscriber_created_json, subscriber_with_consent_json

SUPPRESSED = ("This address is on the suppression list (a hard bounce, a complaint or an erasure): "
              "it is never mailed again.")


@bp.get("/subscribers")
@api_requires(Role.VIEWER)
def list_subscribers():
    limit = parsing.int_arg("limit", DEFAULT_PAGE, 1, MAX_PAGE)
    after_id = parsing.int_arg("after_id", 0, 0, MAX_ID)
    query = select(Subscriber).where(Subscriber.id > after_id).order_by(Subscriber.id).limit(limit + 1)
    status = request.args.get("status")
    if status:
        try:
            query = query.where(Subscriber.status == SubscriberStatus(status))
        except ValueError:
            allowed = ", ".join(s.value for s in SubscriberStatus)
            raise InvalidInput("status", f"Unknown status {status[:40]!r}: use one of {allowed}.") from None
    search = request.args.get("email")
    if search:
        reject_control_characters("email", search)
        # Addresses are stored lowercased; autoescape keeps % and _ literal.
        query = query.where(Subscriber.email.contains(search.strip().lower()[:MAX_EMAIL_LENGTH], autoescape=True))
    return jsonify(page_json(schemas.SubscriberPage, list(db.session.scalars(query)), limit))


@bp.get("/subscribers/<int:subscriber_id>")
@api_requires(Role.VIEWER)
def get_subscriber(subscriber_id):
    return jsonify(subscriber_with_consent_json(parsing.found(Subscriber, subscriber_id, "subscriber")))


@bp.post("/subscribers")
@api_requires(Role.ADMIN)
def create_subscriber():
    """Signup on a person's behalf, with the consent they gave the operator: the same double opt-in
    as the form. 201: new; 202: known, opt-in (re)started; 200: known, nothing to do."""
    person = parsing.body(schemas.NewSubscriber, parsing.json_object())
    if suppression.is_suppressed(person.email):  # the public is never told; an admin may be
        return error(409, SUPPRESSED, "email")
    clock = now()
    known = _subscriber_by_email(person.email)
    before = known.status.value if known else None
    subscriptions.request_signup(person.email, person.name, person.consent, current_terms(clock),
                                 request_context(f"api-operator: {person.consent_source}"), clock)
    subscriber = _subscriber_by_email(person.email)
    if subscriber is None:  # suppressed a moment ago, by a bounce or an erasure
        return error(409, SUPPRESSED, "email")
    if known is None:
        code, outcome, message = 201, "created", "Subscriber created: a confirmation email is on its way."
    elif subscriber.status is SubscriberStatus.PENDING:
        code, outcome, message = 202, "optin", "Consent recorded: the person must confirm by email (double opt-in)."
    else:
        code, outcome, message = 200, "unchanged", f"The subscriber is {subscriber.status.value}: nothing changed."
    if outcome != "unchanged":
        audit("subscriber.create", f"subscriber:{subscriber.id}",
              {"outcome": outcome, "was": before, "source": person.consent_source}, clock)
    response = jsonify(subscriber_created_json(subscriber, message))
    response.status_code = code
    if code == 201:
        response.headers["Location"] = url_for(f"{bp.name}.get_subscriber", subscriber_id=subscriber.id)
    return response


@bp.delete("/subscribers/<int:subscriber_id>")
@api_requires(Role.ADMIN)
def erase_subscriber(subscriber_id):
    """The address is kept only as a suppression HMAC. The service audits the erasure
    (subscribers.erase, by id) in the transaction that makes it."""
    parsing.found(Subscriber, subscriber_id, "subscriber")
    gdpr.erase_person(subscriber_id, now(), g.operator, request.remote_addr)
    return "", 204


def _subscriber_by_email(address: str) -> Subscriber | None:
    return db.session.scalar(select(Subscriber).where(Subscriber.email == address))
