"""A lean Redis client for the sent journal's hot path: one command, one reply, over one socket.

Paid once per email, so it skips redis-py's pool and callbacks (the figures: docs/ARCHITECTURE.md,
"Delivery"). Plain `redis://` URLs only (host, port, database,
password); callers leave anything else (`rediss://`, sockets) to redis-py.
"""

from __future__ import annotations

import socket
from urllib.parse import unquote, urlsplit


class RespError(Exception):
    """The server said no, or the line is gone: the caller falls back or retries."""


def supported(url: str) -> bool:
    return urlsplit(url).scheme == "redis"


class RespClient:
    def __init__(self, url: str, timeout: float = 5.0):
        parts = urlsplit(url)
        if parts.scheme != "redis":
            raise ValueError(f"not a redis:// URL: {url!r}")
        self.address = (parts.hostname or "127.0.0.1", parts.port or 6379)
        self.password = unquote(parts.password) if parts.password else None
        self.username = unquote(parts.username) if parts.username else None
        self.database = int(parts.path.strip("/") or 0)
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self.buffer = b""
        self.waiting = False  # a command was posted and its reply not read yet

    def command(self, *args: bytes | str | int):
        """Send one command, return its reply (int, bytes, list or None). Raises RespError."""
        return self.send(encode(args))

    def send(self, encoded: bytes):
        """The same for a command already encoded (see encode)."""
        self.post(encoded)
        return self.settle()

    def post(self, encoded: bytes) -> None:
        """Send a command without waiting for its reply; the reply of the one posted before is
        read first (and raises if it was an error): at most one command is ever unanswered."""
        self.settle()
        if self.sock is None:
            self._connect()
        try:
            self.sock.sendall(encoded)
        except OSError as error:
            self.close()
            raise RespError(f"redis {self.address[0]}:{self.address[1]}: {error}") from error
        self.waiting = True

    def settle(self):
        """The reply to the command posted last (None when there is none)."""
        if not self.waiting:
            return None
        self.waiting = False
        try:
            return self._reply()
        except OSError as error:
            self.close()
            raise RespError(f"redis {self.address[0]}:{self.address[1]}: {error}") from error

    def _connect(self) -> None:
        try:
            self.sock = socket.create_connection(self.address, timeout=self.timeout)
        except OSError as error:
            raise RespError(f"redis {self.address[0]}:{self.address[1]}: {error}") from error
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""
        self.waiting = False
        try:
            if self.password is not None:
                self.command(*(("AUTH", self.username, self.password) if self.username else ("AUTH", self.password)))
            if self.database:
                self.command("SELECT", self.database)
        except RespError:
            self.close()
            raise

    def _line(self) -> bytes:
        while True:
            end = self.buffer.find(b"\r\n")
            if end >= 0:
                line, self.buffer = self.buffer[:end], self.buffer[end + 2:]
                return line
            chunk = self.sock.recv(65536)
            if not chunk:
                raise OSError("connection closed by the server")
            self.buffer += chunk

    def _exactly(self, size: int) -> bytes:
        while len(self.buffer) < size + 2:
            chunk = self.sock.recv(max(65536, size + 2 - len(self.buffer)))
            if not chunk:
                raise OSError("connection closed by the server")
            self.buffer += chunk
        data, self.buffer = self.buffer[:size], self.buffer[size + 2:]
        return data

    def _reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b":":
            return int(rest)
        if kind == b"+":
            return rest
        if kind == b"-":
            raise RespError(rest.decode("utf-8", "replace"))
        if kind == b"$":
            size = int(rest)
            return None if size < 0 else self._exactly(size)
        if kind == b"*":
            count = int(rest)
            return None if count < 0 else [self._reply() for _ in range(count)]
        self.close()
        raise RespError(f"not a RESP reply: {line[:80]!r}")

    def close(self) -> None:
        self.waiting = False
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None
                self.buffer = b""


def encode(args) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        value = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(value), value))
    return b"".join(parts)
