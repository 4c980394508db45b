"""Signups at the same moment, on PostgreSQL (real concurrency): each decision is taken once."""

from sqlalchemy import func, select

from newsletter.extensions import db
from newsletter.models import ConsentEvent, OutboundEmail
from newsletter.services import subscriptions
from newsletter.services.terms import current_terms

from tests.support.concurrency import run_at_once
from tests.support.database import postgres_only
from tests.support.forms import form_fields

PARALLEL = 10


def count(app, model) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(model))


@postgres_only
def test_parallel_signups_of_a_pending_address_send_one_confirmation_per_interval(app, visitor, clock):
    assert visitor.sign_up("pending@example.com").status_code == 303
    for window in range(1, 4):  # a few rounds: a race that is lost only sometimes still shows
        clock.advance(seconds=app.config["CONFIRM_RESEND_SECONDS"] + 1)

        def sign_up_again(index):
            with app.app_context():
                context = subscriptions.Context(ip=f"198.51.100.{index}", user_agent="race", source="race")
                subscriptions.request_signup("pending@example.com", None, "yes", current_terms(clock()), context,
                                             clock())

        run_at_once(PARALLEL, sign_up_again)
        assert count(app, ConsentEvent) == 1 + window * PARALLEL  # every request is recorded
        assert count(app, OutboundEmail) == 1 + window  # one new confirmation per interval


@postgres_only
def test_one_form_token_sent_in_parallel_signs_up_one_address(app, client, clock):
    fields = form_fields(client.get("/embed").get_data(as_text=True))
    clock.advance(seconds=5)
    browsers = [app.test_client() for _ in range(PARALLEL)]

    def send(index):
        return browsers[index].post("/embed", data={**fields, "email": f"r{index}@example.com",
                                                    "consent": "on"}).status_code

    statuses = run_at_once(PARALLEL, send)
    assert sorted(statuses) == [303] + [400] * (PARALLEL - 1)
    assert count(app, OutboundEmail) == 1
