"""Chunked bodies over a real socket to gunicorn (the Procfile's web line): the limit holds there too."""

from __future__ import annotations

import json
import socket
import sys
import threading

from tests.support.services import free_port

from .harness import wait_until

MiB = 2**20
SITE_TOKEN = "site-token-for-the-cms"
ARTICLE = b'{"url": "https://news.example.org/a/1", "title": "Council decides"}'


def post_chunked(port: int, path: str, size: int, head: bytes, tail: bytes, token: str | None = None):
    """POST `head`, spaces, `tail` (`size` bytes in all) in 64 KiB chunks; the status and the body."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    lines = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Content-Type: application/json",
             "Transfer-Encoding: chunked", "Connection: close"]
    if token:
        lines.append(f"Authorization: Bearer {token}")

    def send():
        try:
            sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
            sent = 0
            while sent < size:
                chunk = head if sent == 0 else b" " * min(64 * 1024, size - sent - len(tail))
                if sent + len(chunk) + len(tail) >= size:
                    chunk += tail
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
            sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server answered and closed without reading the rest: what is being tested

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except OSError:
        pass  # a reset after the answer
    finally:
        sender.join(30)
        sock.close()
    head_part, _, body = received.partition(b"\r\n\r\n")
    return int(head_part.split(b" ", 2)[1]), body


def test_gunicorn_refuses_a_chunked_body_once_it_passes_the_limit(harness, tmp_path):
    database, broker = harness.sqlite(), f"sqla+sqlite:///{tmp_path / 'broker.sqlite'}"
    harness.app(database, broker)  # the schema
    port = free_port()
    env = harness.env(database, broker, API_TOKEN=SITE_TOKEN)
    argv = [sys.executable, "-m", "gunicorn", "--config", "gunicorn.conf.py", "--bind", f"127.0.0.1:{port}",
            "--workers", "1", "wsgi:app"]
    web = harness.start("web", argv, env)
    wait_until(lambda: _answers(port), 30, "gunicorn to answer")

    status, body = post_chunked(port, "/api/v1/articles", 20 * MiB, b"[" + ARTICLE, b"]", SITE_TOKEN)
    assert (status, json.loads(body)) == (413, {"error": "The request is too large (at most 5 MiB)."}), web.log()
    status, body = post_chunked(port, "/api/v1/subscribe", 2 * MiB, b'{"email": "a@example.com", "consent": true',
                                b"}")
    assert (status, json.loads(body)) == (413, {"error": "The request is too large (at most 1 MiB)."})
    status, body = post_chunked(port, "/api/v1/articles", 3 * MiB, b"[" + ARTICLE, b"]", SITE_TOKEN)
    assert status == 201 and json.loads(body)["created"] == 1  # within the articles' own limit


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return sock.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False
