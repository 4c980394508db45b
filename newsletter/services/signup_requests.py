"""Public signups: answered at once, decided after the answer.

Nothing may tell a new address from a known one, the time of the answer included. So a request
does the same work for every address: it checks the input (nothing there depends on who is
subscribed), writes one SignupRequest row, commits and wakes a worker. The worker takes the
decision (subscriptions.decide_signup) with the request's own time, place, terms and checkbox
value, in one transaction with the row's deletion. A sweeper in beat hands out again the rows
whose wake-up call was lost, so a broker that is down delays a signup and never loses it.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, select

from .. import metrics
from ..extensions import db
from ..models import SignupRequest, TermsVersion
from ..queue import PROCESS_SIGNUP, enqueue
from .subscriptions import Context, Decision, SignupOutcome, checked_signup, commit_signup, decide_signup

SWEEP_GRACE = timedelta(seconds=10)  # leave fresh requests to the message that woke a worker for them


def record(email, name, consent, terms: TermsVersion, context: Context, now: datetime) -> int:
    """Record a signup for a worker to decide; the same statements whoever the address is.

    Raises InvalidInput, and records nothing, for bad input or consent that is not a real yes.
    """
    address, name, checkbox_value = checked_signup(email, name, consent)
    row = SignupRequest(email=address, name=name, checkbox_value=checkbox_value, terms_version_id=terms.id,
                        requested_at=now, **context.fields())
    db.session.add(row)
    db.session.flush()
    request_id = row.id  # read before the commit, which would expire it and cost one more query
    db.session.commit()
    metrics.record_signup("accepted")
    enqueue(PROCESS_SIGNUP, request_id)
    return request_id


def process(request_id: int) -> SignupOutcome | None:
    """Decide one recorded signup. None: there is none by this id (decided already, or erased)."""
    return commit_signup(lambda: _claim_and_decide(request_id))


def _claim_and_decide(request_id: int) -> Decision | None:
    # The DELETE is the claim: of two workers handed one request, one deletes the row and the other,
    # after waiting for that commit, deletes nothing. A rollback (a parallel insert won) puts it back.
    row = db.session.execute(
        delete(SignupRequest).where(SignupRequest.id == request_id).returning(
            SignupRequest.email, SignupRequest.name, SignupRequest.checkbox_value, SignupRequest.terms_version_id,
            SignupRequest.ip, SignupRequest.user_agent, SignupRequest.source, SignupRequest.requested_at),
        execution_options={"synchronize_session": False},
    ).one_or_none()
    if row is None:
        return None
    terms = db.session.get(TermsVersion, row.terms_version_id)
    context = Context(ip=row.ip, user_agent=row.user_agent, source=row.source)
    # Decided as of the request: the ledger, the resend window and the link's age count from then.
    return decide_signup(row.email, row.name, row.checkbox_value, terms, context, row.requested_at)


def waiting_ids(before: datetime, limit: int = 1000) -> list[int]:
    return list(db.session.scalars(
        select(SignupRequest.id).where(SignupRequest.requested_at < before)
        .order_by(SignupRequest.requested_at, SignupRequest.id).limit(limit)
    ))


def sweep(now: datetime) -> int:
    """Wake workers again for requests still waiting after the grace: what a lost message left."""
    ids = waiting_ids(now - SWEEP_GRACE)
    for request_id in ids:
        if not enqueue(PROCESS_SIGNUP, request_id):
            break
    return len(ids)
