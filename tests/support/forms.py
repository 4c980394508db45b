"""Filling in the real forms the way a browser does: the signup form, the console login."""

from __future__ import annotations

import re

HIDDEN = re.compile(r'<input type="hidden" name="(\w+)" value="([^"]*)"')
OPERATOR_PASSWORD = "a-long-enough-password"


def form_fields(html: str) -> dict:
    return dict(HIDDEN.findall(html))


class Visitor:
    """A person at the signup form: loads it, waits like a human, sends it."""

    def __init__(self, client, clock):
        self.client = client
        self.clock = clock

    def load(self, path="/subscribe") -> dict:
        response = self.client.get(path)
        assert response.status_code == 200
        return form_fields(response.get_data(as_text=True))

    def sign_up(self, email, consent="yes", path="/subscribe", wait=5, environ_base=None, **extra):
        fields = self.load(path)
        self.clock.advance(seconds=wait)
        data = {**fields, "email": email, **extra}
        if consent is not None:
            data["consent"] = consent
        return self.client.post(path, data=data, environ_base=environ_base or {})


def log_in(client, email, password=OPERATOR_PASSWORD) -> None:
    """Log a test client in to the console the way a browser does (the form's CSRF token)."""
    token = form_fields(client.get("/console/login").get_data(as_text=True))["csrf_token"]
    response = client.post("/console/login", data={"csrf_token": token, "email": email, "password": password})
    assert response.status_code == 302, response.get_data(as_text=True)
