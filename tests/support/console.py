"""The console the way a browser uses it: operators of each role, clients logged in as them, forms
posted with the CSRF token of the page they are on, and the flash messages a page shows."""

from __future__ import annotations

import re
from collections.abc import Iterable
from html import unescape

from sqlalchemy import select

from newsletter.extensions import db
from newsletter.models import AuditEvent
from newsletter.services import operators

from .forms import OPERATOR_PASSWORD, form_fields, log_in

FLASH = re.compile(r'<p class="flash [^"]*" role="status">(.*?)</p>', re.S)


def create_operators(clock, roles: Iterable[str]) -> None:
    """One operator a role, `<role>@example.org` with OPERATOR_PASSWORD (inside an app context)."""
    for role in roles:
        operators.create_operator(f"{role}@example.org", role, OPERATOR_PASSWORD, clock())


def audit_trail(prefix: str) -> list[tuple[str, str | None]]:
    """(action, target) of the audit events whose action starts with `prefix`, oldest first (in an app context)."""
    return [(e.action, e.target) for e in db.session.scalars(select(AuditEvent).order_by(AuditEvent.id))
            if e.action.startswith(prefix)]


def logged_in(app, role: str):
    """A new test client, logged in through the login form as the operator create_operators made."""
    client = app.test_client()
    log_in(client, f"{role}@example.org")
    return client


class ConsoleForms:
    """The forms of one console page: each posted with the CSRF token that page carries."""

    def __init__(self, page: str):
        self.page = page

    def csrf(self, client) -> str:
        return form_fields(client.get(self.page).get_data(as_text=True))["csrf_token"]

    def post(self, client, path, data=None, **kwargs):
        return client.post(path, data={"csrf_token": self.csrf(client), **(data or {})}, **kwargs)


def flashes(response) -> list[str]:
    return [unescape(re.sub(r"\s+", " ", message)) for message in FLASH.findall(response.get_data(as_text=True))]
