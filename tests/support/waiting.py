"""Waiting on a condition with a bounded timeout, never a fixed sleep."""

from __future__ import annotations

import time


def wait_until(predicate, timeout: float, what: str):
    """The predicate's first truthy value; AssertionError after `timeout` seconds without one."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)
