"""Whether a service the tests need is here: skipped on a developer's machine, a failure under CI."""

from __future__ import annotations

import os
import socket

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(service: str, available: bool, how: str) -> None:
    if available:
        return
    message = f"{service} is not available ({how})"
    if IN_CI:
        pytest.fail(f"{message}: CI must run these tests, not skip them", pytrace=False)
    pytest.skip(message)


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (closed again, so a test can also use it as 'down')."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]
