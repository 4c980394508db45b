"""A feed host over real HTTP(S) on loopback: serves fixture feeds, honours If-None-Match /
If-Modified-Since, and can fail, hang, redirect, trickle its answer or answer in something else."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
RSS = "application/rss+xml; charset=utf-8"
ATOM = "application/atom+xml; charset=utf-8"


@dataclass
class Route:
    body: bytes = b""
    content_type: str = RSS
    etag: str | None = None
    last_modified: str | None = None
    status: int = 200
    hang: bool = False  # accept the request and never answer
    location: str | None = None  # with a 3xx status
    trickle: float | None = None  # seconds between the bytes of the answer
    trickle_body_only: bool = False  # the status line and headers at once, then the body trickles
    trickle_for: float = 5  # then hang up: a client that waits it out fails its test, it does not hang it
    delay: float = 0  # seconds before answering at all
    raw: bytes | None = None  # answer with these bytes, not HTTP


class FeedHost:
    """`host` may be "::1"; a `tls` context makes it an https host (its certificate decides the name)."""

    def __init__(self, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None):
        self.routes: dict[str, Route] = {}
        self.requests: list[tuple[str, dict]] = []
        self.release = threading.Event()  # lets hanging and trickling requests go at the end of a test
        self.scheme = "https" if tls else "http"
        feed_host = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                feed_host.requests.append((self.path, dict(self.headers)))
                self.close_connection = True
                route = feed_host.routes.get(self.path)
                if route is None:
                    return self.send_error(404)
                release = feed_host.release
                if route.hang:
                    release.wait(10)
                    return
                if route.raw is not None:
                    self.wfile.write(route.raw)
                    return
                if route.delay and release.wait(route.delay):
                    return
                answer = self._answer(route)
                at_once = len(answer) - len(route.body) if route.trickle_body_only else 0
                if route.trickle is None:
                    at_once = len(answer)
                self.wfile.write(answer[:at_once])
                self.wfile.flush()
                give_up = time.monotonic() + route.trickle_for
                for index in range(at_once, len(answer)):
                    if release.wait(route.trickle) or time.monotonic() > give_up:
                        return
                    self.wfile.write(answer[index:index + 1])
                    self.wfile.flush()

            def _answer(self, route) -> bytes:
                if route.status in (301, 302, 303, 307, 308):
                    return self._head(route.status, [("Location", route.location), ("Content-Length", "0")])
                if route.status != 200:
                    return self._head(route.status, [("Content-Length", "0")])
                if self._not_modified(route):
                    return self._head(304, [("ETag", route.etag)] if route.etag else [])
                fields = [("Content-Type", route.content_type), ("Content-Length", str(len(route.body)))]
                fields += [(name, value) for name, value in (("ETag", route.etag),
                                                             ("Last-Modified", route.last_modified)) if value]
                return self._head(200, fields) + route.body

            def _head(self, status, fields) -> bytes:
                reason = self.responses.get(status, ("",))[0]
                lines = [f"HTTP/1.1 {status} {reason}"] + [f"{name}: {value}" for name, value in fields]
                return ("\r\n".join(lines + ["Connection: close", "", ""])).encode("latin-1")

            def _not_modified(self, route):
                if self.headers.get("If-None-Match") is not None:
                    return route.etag is not None and self.headers["If-None-Match"] == route.etag
                since = self.headers.get("If-Modified-Since")
                return since is not None and since == route.last_modified

            def log_message(self, *args):
                pass

        class Server(ThreadingHTTPServer):
            address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
            daemon_threads = True

        self.server = Server((host, 0), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.host = host
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> FeedHost:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    def url(self, path: str, host: str | None = None) -> str:
        host = host or self.host
        return f"{self.scheme}://{f'[{host}]' if ':' in host else host}:{self.port}{path}"

    def serve(self, path, fixture=None, body=None, **options) -> str:
        if body is None:
            body = (FIXTURES / fixture).read_bytes() if fixture else b""
        self.routes[path] = Route(body=body, **options)
        return self.url(path)

    def seen(self, path) -> list[dict]:
        return [headers for seen_path, headers in self.requests if seen_path == path]

    def reset(self):
        self.release.set()
        self.release = threading.Event()
        self.routes.clear()
        self.requests.clear()
