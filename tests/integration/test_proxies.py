"""Client addresses: X-Forwarded-* count only when one of our proxies (TRUSTED_PROXIES) sent them."""

import logging

import pytest
from sqlalchemy import select
from werkzeug.test import Client

from newsletter import create_app
from newsletter.extensions import db
from newsletter.models import ConsentEvent
from newsletter.proxies import trust_proxies

from tests.support.database import base_config
from tests.support.signups import with_signup_worker

ATTACKER = "203.0.113.66"  # reaches gunicorn directly
PROXY = "10.0.0.2"
SPOOFED = "198.51.100.7"


def make_app(tmp_path, smtp, clock, **settings):
    config = base_config(tmp_path, smtp.url, f"sqlite:///{tmp_path / 'proxies.sqlite'}", clock)
    app = with_signup_worker(create_app({**config, **settings}))
    with app.app_context():
        db.create_all()
    return app


def consent_ip(app, client, peer, forwarded_for=None, email="reader@example.com"):
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    response = client.post("/api/v1/subscribe", json={"email": email, "consent": True}, headers=headers,
                           environ_base={"REMOTE_ADDR": peer})
    assert response.status_code == 202, response.get_data(as_text=True)
    with app.app_context():
        return db.session.scalar(select(ConsentEvent.ip).order_by(ConsentEvent.id.desc()).limit(1))


def test_forwarded_for_counts_from_a_trusted_proxy_only(tmp_path, smtp, clock):
    app = make_app(tmp_path, smtp, clock, PROXY_FIX_X_FOR=1, TRUSTED_PROXIES="127.0.0.1/32, 10.0.0.0/8")
    client = app.test_client()
    assert consent_ip(app, client, PROXY, SPOOFED, "a@example.com") == SPOOFED
    assert consent_ip(app, client, "::ffff:10.0.0.3", SPOOFED, "b@example.com") == SPOOFED
    assert consent_ip(app, client, ATTACKER, SPOOFED, "c@example.com") == ATTACKER
    assert consent_ip(app, client, ATTACKER, f"{SPOOFED}, {PROXY}", "d@example.com") == ATTACKER


def test_a_spoofed_forwarded_for_does_not_escape_the_per_ip_limit(tmp_path, smtp, clock):
    app = make_app(tmp_path, smtp, clock, PROXY_FIX_X_FOR=1, TRUSTED_PROXIES="10.0.0.0/8",
                   SIGNUP_RATE_LIMIT="2 per minute")
    client = app.test_client()
    statuses = [client.post("/api/v1/subscribe", json={"email": f"r{n}@example.com", "consent": True},
                            headers={"X-Forwarded-For": f"198.51.100.{n}"},
                            environ_base={"REMOTE_ADDR": ATTACKER}).status_code for n in range(3)]
    assert statuses == [202, 202, 429]
    # Through the proxy, each client has a budget of its own.
    assert client.post("/api/v1/subscribe", json={"email": "r9@example.com", "consent": True},
                       headers={"X-Forwarded-For": SPOOFED}, environ_base={"REMOTE_ADDR": PROXY}).status_code == 202


def test_behind_a_chain_every_inner_proxy_must_be_trusted(tmp_path, smtp, clock):
    app = make_app(tmp_path, smtp, clock, PROXY_FIX_X_FOR=2, TRUSTED_PROXIES="10.0.0.0/8")
    client = app.test_client()
    assert consent_ip(app, client, PROXY, f"{SPOOFED}, 10.0.0.1", "a@example.com") == SPOOFED
    # The inner proxy was reached from outside the outer one: its peer is all we know.
    assert consent_ip(app, client, PROXY, f"{SPOOFED}, {ATTACKER}", "b@example.com") == PROXY


def test_proxies_without_trusted_networks_trust_no_header_and_say_so(tmp_path, smtp, clock, caplog):
    with caplog.at_level(logging.WARNING, logger="newsletter.proxies"):
        app = make_app(tmp_path, smtp, clock, PROXY_FIX_X_FOR=1, TRUSTED_PROXIES="")
    assert "TRUSTED_PROXIES is empty" in caplog.text
    assert consent_ip(app, app.test_client(), "127.0.0.1", SPOOFED) == "127.0.0.1"


def test_a_malformed_trusted_network_stops_the_start(tmp_path, smtp, clock):
    with pytest.raises(ValueError, match="TRUSTED_PROXIES: 'ten.0.0.0/8' is not an address or network"):
        make_app(tmp_path, smtp, clock, PROXY_FIX_X_FOR=1, TRUSTED_PROXIES="127.0.0.1/32,ten.0.0.0/8")


def echo(environ, start_response):
    """What the app behind the middleware sees."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    seen = [environ.get("REMOTE_ADDR"), environ["wsgi.url_scheme"], environ.get("HTTP_HOST"),
            environ.get("HTTP_X_FORWARDED_FOR", "-")]
    return [" ".join(seen).encode()]


@pytest.mark.parametrize("peer,seen", [
    (PROXY, f"{SPOOFED} https news.example.org {SPOOFED}"),
    (ATTACKER, f"{ATTACKER} http localhost -"),  # not ours: every forwarded header is dropped
])
def test_scheme_and_host_are_taken_from_trusted_proxies_only(peer, seen):
    client = Client(trust_proxies(echo, 1, "10.0.0.0/8"))
    response = client.get("/", environ_base={"REMOTE_ADDR": peer}, headers={
        "X-Forwarded-For": SPOOFED, "X-Forwarded-Proto": "https", "X-Forwarded-Host": "news.example.org"})
    assert response.get_data(as_text=True) == seen


def test_without_proxies_nothing_is_wrapped():
    assert trust_proxies(echo, 0, "") is echo
