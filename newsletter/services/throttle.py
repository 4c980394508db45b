"""Sending speed: a global rate (SEND_RATE) and slowing down when the relay pushes back."""

from __future__ import annotations

import random
import threading
import time
from datetime import timedelta

import redis
from flask import Flask

# A token bucket in Redis shared by every worker: refill at `rate` per second up to `rate` tokens
# (one second of burst). Returns 0 when a token was taken, else the milliseconds to wait.
_BUCKET = """
local key, rate, now_ms = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2])
local state = redis.call('HMGET', key, 'tokens', 'at')
local tokens = tonumber(state[1]) or rate
local at = tonumber(state[2]) or now_ms
tokens = math.min(rate, tokens + (now_ms - at) * rate / 1000)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = math.ceil((1 - tokens) * 1000 / rate) end
redis.call('HSET', key, 'tokens', tokens, 'at', now_ms)
redis.call('PEXPIRE', key, 60000)
return wait
"""


def backoff(attempts: int, base_seconds: float) -> timedelta:
    """Exponential back-off with jitter after a temporary failure: base, 2x, 4x ..., at most 2 hours."""
    return timedelta(seconds=min(base_seconds * 2 ** max(attempts - 1, 0), 7200) * random.uniform(0.8, 1.2))


class NoLimit:
    def acquire(self) -> None:
        return None


class LocalBucket:
    """Without Redis: the same bucket, per worker process."""

    def __init__(self, rate: float):
        self.rate = rate
        self.tokens = rate
        self.at = time.monotonic()
        self.lock = threading.Lock()

    def acquire(self) -> None:
        while True:
            with self.lock:
                now = time.monotonic()
                self.tokens = min(self.rate, self.tokens + (now - self.at) * self.rate)
                self.at = now
                if self.tokens >= 1:
                    self.tokens -= 1
                    return
                wait = (1 - self.tokens) / self.rate
            time.sleep(wait)


class RedisBucket:
    def __init__(self, url: str, rate: float, key: str = "newsletter:send-rate"):
        self.client = redis.Redis.from_url(url, socket_timeout=5)
        self.script = self.client.register_script(_BUCKET)
        self.rate = rate
        self.key = key

    def acquire(self) -> None:
        while True:
            # Redis' own clock, so workers on several machines share one notion of time.
            seconds, micros = self.client.time()
            wait_ms = int(self.script(keys=[self.key], args=[self.rate, seconds * 1000 + micros // 1000]))
            if wait_ms <= 0:
                return
            time.sleep(wait_ms / 1000)


_limiters: dict[tuple, object] = {}


def rate_limiter(app: Flask):
    rate = app.config["SEND_RATE"]
    if rate <= 0:
        return NoLimit()
    key = (rate, app.config["REDIS_URL"])
    if key not in _limiters:
        _limiters[key] = RedisBucket(app.config["REDIS_URL"], rate) if app.config["REDIS_URL"] else LocalBucket(rate)
    return _limiters[key]


class AdaptiveThrottle:
    """Slow down when the relay says 421 or several 4xx in a row; speed up again on success.

    Burning through the list while a relay throttles turns every recipient into a deferral.
    """

    def __init__(self, streak_limit: int = 3, first_pause: float = 0.5, max_pause: float = 30.0):
        self.streak_limit = streak_limit
        self.first_pause = first_pause
        self.max_pause = max_pause
        self.streak = 0
        self.pause = 0.0

    def temporary_failure(self, reply: str) -> None:
        self.streak += 1
        if "421" in reply or self.streak >= self.streak_limit:
            self.pause = min(self.max_pause, self.pause * 2 if self.pause else self.first_pause)

    def success(self) -> None:
        self.streak = 0
        self.pause = self.pause / 2 if self.pause > 0.05 else 0.0

    def wait(self) -> None:
        if self.pause:
            time.sleep(self.pause)
