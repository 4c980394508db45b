"""Flask-Limiter's counters in a test's own Redis, and waiting for the limiter to use that Redis again.

After an outage Flask-Limiter asks its storage again only on a request, and then only 1, 2, 4 ...
32 s after the last time it asked; until then it counts in the process's memory.
"""

from __future__ import annotations

import time

from .redis_server import RedisServer

LIMITS_PREFIX = "LIMITS"  # the limits library's key prefix in Redis
RECOVERY_TIMEOUT = 75


def limit_counters(server: RedisServer) -> list[bytes]:
    with server.client() as client:
        return client.keys(LIMITS_PREFIX + "*")


def wait_until_counted_in_redis(client, server: RedisServer, timeout: float = RECOVERY_TIMEOUT) -> None:
    """Hit a rate-limited route until its counter lands in `server`. The hit is an API signup with
    no body: refused with 400 after the limiter counted it, so nothing is stored."""
    deadline = time.monotonic() + timeout
    while True:
        with server.client() as redis_client:
            stale = redis_client.keys(LIMITS_PREFIX + "*")
            if stale:
                redis_client.delete(*stale)
        assert client.post("/api/v1/subscribe", json={}).status_code in (400, 429)
        if limit_counters(server):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"the rate limiter did not count in Redis again within {timeout}s")
        time.sleep(0.25)
