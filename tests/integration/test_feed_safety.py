"""Feeds cannot reach into our network, cannot tell what they found there, and cannot hold a fetch
past FEED_TIMEOUT (issue 12, items 2 and 3). Real HTTP(S) servers on loopback; the only stand-in is
a DNS of the test's own, handed to the fetch the way socket.getaddrinfo is."""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time

import pytest
from sqlalchemy import func, select

from newsletter.extensions import db
from newsletter.models import Article, FeedState
from newsletter.services import feeds
from tests.support import tls
from tests.support.feed_server import FeedHost
from tests.support.services import free_port, require

UNREACHABLE = "the feed could not be fetched"
NAME = "feeds.example.test"
METADATA = "169.254.169.254"


class Resolver:
    """A DNS of the test's own: each name it knows answers its addresses in turn (the last one
    repeats; None: no such name); any other name goes to the system's resolver."""

    def __init__(self, answers: dict[str, list[str | None]]):
        self.answers = answers
        self.asked: list[str] = []

    def __call__(self, host, port, *args):
        self.asked.append(host)
        if host not in self.answers:
            return socket.getaddrinfo(host, port, *args)
        addresses = self.answers[host]
        address = addresses[min(self.asked.count(host), len(addresses)) - 1]
        if address is None:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        if ":" in address:
            return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, port, 0, 0))]
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]


@pytest.fixture(scope="module")
def hosts():
    """A feed host on 127.0.0.1 and one on ::1, both serving the same good feed."""
    started = [FeedHost("127.0.0.1").start(), FeedHost("::1").start()]
    yield started
    for host in started:
        host.stop()


@pytest.fixture
def host(hosts):
    for each in hosts:
        each.reset()
        each.serve("/feed/", "blog.rss")
    yield hosts[0]
    for each in hosts:
        each.reset()


def fetch(url, clock, resolve=socket.getaddrinfo) -> feeds.FeedReport:
    return feeds.fetch_feed(url, clock(), resolve=resolve)


def article_count() -> int:
    return db.session.scalar(select(func.count()).select_from(Article))


def requests_seen(hosts) -> list:
    return [request for each in hosts for request in each.requests]


# --- refused by default ---------------------------------------------------------------------------


def test_addresses_of_our_own_network_are_refused_by_default_with_one_text(app, runner, hosts, host, caplog):
    port, port6 = hosts[0].port, hosts[1].port
    urls = [
        host.url("/feed/"),  # loopback
        hosts[1].url("/feed/"),  # IPv6 loopback
        f"http://[::ffff:127.0.0.1]:{port}/feed/",  # IPv4-mapped IPv6
        f"http://[::ffff:7f00:1]:{port}/feed/",  # the same, spelled in hex
        f"http://[64:ff9b::7f00:1]:{port}/feed/",  # NAT64 of 127.0.0.1
        f"http://localhost:{port}/feed/",  # a name (/etc/hosts) for loopback
        f"http://2130706433:{port}/feed/",  # 127.0.0.1 as one number
        f"http://0.0.0.0:{port}/feed/",  # unspecified: on Linux it reaches loopback
        f"http://[::]:{port6}/feed/",
        "http://10.20.30.40/feed/",  # private
        "http://[fd00::1]/feed/",  # unique local
        "http://100.64.0.1/feed/",  # carrier-grade NAT
        f"http://{METADATA}/latest/meta-data/",  # link-local: the cloud's metadata service
        "http://[fe80::1]/feed/",
        "http://224.0.0.1/feed/",  # multicast
        "http://240.0.0.1/feed/",  # reserved
    ]
    caplog.set_level(logging.WARNING, logger="newsletter.services.feeds")
    result = runner.invoke(args=["articles", "fetch", *urls])

    assert result.exit_code == 1
    assert result.output.splitlines() == [f"feed {url}: failed: {UNREACHABLE}" for url in urls]
    assert requests_seen(hosts) == []  # not one connection got as far as a request
    with app.app_context():
        assert article_count() == 0
        errors = dict(db.session.execute(select(FeedState.url, FeedState.last_error)).all())
        assert errors == {url: UNREACHABLE for url in urls}
    # The reason is for the operator's log, never for the page.
    assert "127.0.0.1, a loopback address: refused by policy" in caplog.text
    assert f"{METADATA}, a link-local address: refused by policy" in caplog.text


def test_a_public_looking_name_that_resolves_into_our_network_is_refused(app, hosts, host, clock, caplog):
    caplog.set_level(logging.WARNING, logger="newsletter.services.feeds")
    for address in ("127.0.0.1", "::1", "::ffff:127.0.0.1", "10.1.2.3", METADATA, "0.0.0.0"):
        port = hosts[1].port if address == "::1" else host.port
        with app.app_context():
            report = fetch(f"http://{NAME}:{port}/feed/", clock, Resolver({NAME: [address]}))
        assert report.error == UNREACHABLE, address
        assert f"{NAME} is {address}, a" in caplog.text
    assert requests_seen(hosts) == []
    with app.app_context():
        assert article_count() == 0


# --- one text, whatever happened ------------------------------------------------------------------


def test_one_text_whatever_kept_the_answer_from_arriving(app, host, clock, caplog):
    """Closed, silent, not HTTP, unknown, refused, redirected away: the same sentence for all, so
    fetch results say nothing about which hosts and ports exist. The log says which it was."""
    app.config.update(FEED_ALLOW_PRIVATE=True, FEED_TIMEOUT=0.5)
    caplog.set_level(logging.WARNING, logger="newsletter.services.feeds")
    cases = {
        f"http://127.0.0.1:{free_port()}/feed/": "ConnectionRefusedError",  # closed port
        host.serve("/silent", hang=True): "timed out after 0.5 s",  # open, says nothing
        host.serve("/ssh", raw=b"SSH-2.0-OpenSSH_9.6p1 Debian-3\r\n"): "BadStatusLine",  # open, not HTTP
        f"http://unknown.{NAME}/feed/": "cannot resolve unknown.feeds.example.test",
        f"http://{METADATA}/latest/meta-data/": "refused by policy",
        host.serve("/to-file", status=302, location="file:///etc/passwd"): "not an absolute http(s) URL",
        host.serve("/loop", status=302, location="/loop"): "more than 10 redirects",
    }
    resolve = Resolver({f"unknown.{NAME}": [None]})
    with app.app_context():
        for url, detail in cases.items():
            caplog.clear()
            assert fetch(url, clock, resolve).error == UNREACHABLE, url
            assert detail in caplog.text, (url, caplog.text)
        assert "OpenSSH" not in db.session.scalar(select(FeedState.last_error).where(FeedState.url.like("%/ssh")))


# --- redirects and DNS ----------------------------------------------------------------------------


def test_every_redirect_is_vetted_and_refused_targets_are_never_requested(app, host, clock):
    app.config["FEED_ALLOW_PRIVATE"] = True  # even for intranet feeds: never these
    good = host.serve("/good.rss", "blog.rss")
    refused = {
        "/to-metadata": f"http://{METADATA}/latest/meta-data/",
        "/to-mapped-metadata": f"http://[::ffff:{METADATA}]/latest/meta-data/",
        "/to-this-host": f"http://0.0.0.0:{host.port}/good.rss",  # would reach this very server
        "/to-multicast": "http://224.0.0.1/feed/",
        "/to-link-local-v6": "http://[fe80::1]/feed/",
    }
    urls = {path: host.serve(path, status=302, location=location) for path, location in refused.items()}
    followed = host.serve("/moved", status=301, location="/good.rss")
    with app.app_context():
        for path, url in urls.items():
            assert fetch(url, clock).error == UNREACHABLE, path
        assert article_count() == 0
        assert host.seen("/good.rss") == []

        report = fetch(followed, clock)
        assert (report.error, report.articles.created) == (None, 3)
        assert {a.source for a in db.session.scalars(select(Article))} == {followed}
    assert len(host.seen("/good.rss")) == 1 and good.endswith("/good.rss")


def test_the_vetted_address_is_the_one_connected_to_and_each_hop_is_resolved_again(app, host, clock):
    """A rebinding DNS answers loopback first (allowed here) and the metadata service after."""
    app.config["FEED_ALLOW_PRIVATE"] = True
    resolve = Resolver({NAME: ["127.0.0.1", METADATA]})
    url = f"http://{NAME}:{host.port}/feed/"
    with app.app_context():
        report = fetch(url, clock, resolve)
        assert (report.error, report.articles.created) == (None, 3)
        assert resolve.asked == [NAME]  # one lookup: nothing asks again between vetting and connecting
        [request] = host.seen("/feed/")
        assert request["Host"] == f"{NAME}:{host.port}"

        # A redirect to the same name is a new hop: looked up again, and this time refused.
        hop = host.serve("/hop", status=302, location=url)
        assert fetch(hop, clock, resolve).error == UNREACHABLE
        assert resolve.asked == [NAME, NAME]
    assert len(host.seen("/feed/")) == 1


def test_https_connects_to_the_vetted_address_with_the_name_for_sni_and_the_certificate(
        app, clock, tmp_path, monkeypatch):
    require("openssl", tls.available(), "apt-get install openssl")
    certificates = tls.make_certificates(tmp_path, NAME)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificates.certificate, certificates.key)
    names = []
    context.sni_callback = lambda sock, name, ctx: names.append(name)
    secure = FeedHost("127.0.0.1", tls=context).start()
    try:
        secure.serve("/feed/", "blog.rss")
        monkeypatch.setenv("SSL_CERT_FILE", str(certificates.ca))
        app.config["FEED_ALLOW_PRIVATE"] = True
        with app.app_context():
            report = fetch(f"https://{NAME}:{secure.port}/feed/", clock, Resolver({NAME: ["127.0.0.1"]}))
            assert (report.error, report.articles.created) == (None, 3)
            assert names == [NAME]
            assert secure.seen("/feed/")[0]["Host"] == f"{NAME}:{secure.port}"
            # The certificate names the host, not the address: by address, it does not verify.
            assert fetch(secure.url("/feed/"), clock).error == UNREACHABLE
    finally:
        secure.stop()


# --- the whole fetch within FEED_TIMEOUT ----------------------------------------------------------


def test_feed_timeout_bounds_the_whole_fetch_however_the_time_is_spent(app, host, clock):
    """A server trickling its headers (or its body) a byte at a time, redirects that are each quick
    enough but many, a DNS that never answers: each fetch ends within FEED_TIMEOUT."""
    timeout = 1.5
    app.config.update(FEED_ALLOW_PRIVATE=True, FEED_TIMEOUT=timeout)
    hops = [host.serve(f"/hop{n}", status=302, location=f"/hop{n + 1}", delay=0.6) for n in range(5)]
    dns_answers = threading.Event()

    def hanging_dns(hostname, port, *args):
        dns_answers.wait(30)
        return socket.getaddrinfo("127.0.0.1", port, *args)

    cases = [
        ("headers", host.serve("/trickle-headers", "blog.rss", trickle=0.3), socket.getaddrinfo),
        ("body", host.serve("/trickle-body", "blog.rss", trickle=0.3, trickle_body_only=True), socket.getaddrinfo),
        ("redirects", hops[0], socket.getaddrinfo),
        ("dns", f"http://{NAME}:{host.port}/feed/", hanging_dns),
    ]
    try:
        with app.app_context():
            for name, url, resolve in cases:
                started = time.monotonic()
                report = fetch(url, clock, resolve)
                elapsed = time.monotonic() - started
                assert report.error == UNREACHABLE, name
                assert timeout - 0.1 <= elapsed < timeout + 2, (name, elapsed)
            assert article_count() == 0
    finally:
        dns_answers.set()
    assert len(host.seen("/trickle-headers")) == 1 and len(host.seen("/hop2")) == 1
