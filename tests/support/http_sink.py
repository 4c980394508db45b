"""An HTTP server on loopback that answers 200 to every POST and keeps what was posted: where a
Sentry DSN can point in tests, so that error reports are real requests that never leave the machine."""

from __future__ import annotations

import gzip
import threading
import time
import zlib
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Posted:
    path: str
    headers: dict
    body: bytes


class HttpSink:
    def __init__(self):
        self.posted: list[Posted] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                sink.posted.append(Posted(self.path, dict(self.headers), _decoded(raw, self.headers)))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def start(self) -> HttpSink:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def wait_for(self, predicate, timeout: float = 15) -> list[Posted]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [post for post in list(self.posted) if predicate(post)]
            if found:
                return found
            time.sleep(0.05)
        raise AssertionError(f"nothing matching was posted within {timeout}s: {[p.path for p in self.posted]}")


def _decoded(raw: bytes, headers) -> bytes:
    encoding = (headers.get("Content-Encoding") or "").lower()
    if encoding == "gzip":
        return gzip.decompress(raw)
    if encoding == "deflate":
        return zlib.decompress(raw)
    if encoding == "br":
        import brotli  # only when sentry-sdk found brotli installed and chose it

        return brotli.decompress(raw)
    return raw
