"""The signup worker's part, for tests that run no worker.

A public signup answers at once and leaves a SignupRequest that a worker decides a moment later
(newsletter/services/signup_requests.py). Integration tests have no worker: their client does
that part right after each request, through the same service the worker's task calls, so a test
that checks the decision (the subscriber, its consent, its confirmation) sees it when it looks.
"""

from __future__ import annotations

from flask.testing import FlaskClient
from sqlalchemy import select

from newsletter.extensions import db
from newsletter.models import SignupRequest
from newsletter.services import signup_requests


def process_signups(app) -> list:
    """Decide every recorded signup, oldest first, as the worker's task does; their outcomes."""
    with app.app_context():
        ids = list(db.session.scalars(select(SignupRequest.id).order_by(SignupRequest.id)))
        return [signup_requests.process(request_id) for request_id in ids]


def waiting_signups(app) -> int:
    with app.app_context():
        return len(db.session.scalars(select(SignupRequest.id)).all())


class SignupWorkerClient(FlaskClient):
    """A test client that, after every request, decides the signups it recorded, as the worker would."""

    def open(self, *args, **kwargs):
        response = super().open(*args, **kwargs)
        process_signups(self.application)
        return response


def plain_client(app) -> FlaskClient:
    """A client after whose requests nobody decides anything: what the request alone did."""
    return FlaskClient(app, app.response_class)


def with_signup_worker(app):
    """The app, its test clients doing the signup worker's part after each request."""
    app.test_client_class = SignupWorkerClient
    return app
