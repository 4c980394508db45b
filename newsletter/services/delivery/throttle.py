"""Sending speed: back-off after temporary failures, the global rate (SEND_RATE), and slowing down
when the relay pushes back."""

from __future__ import annotations

import random
import time
from datetime import timedelta

from flask import Flask

from ...infra.rate_bucket import LocalBucket, NoLimit, RedisBucket


def backoff(attempts: int, base_seconds: float) -> timedelta:
    """Exponential back-off with jitter after a temporary failure: base, 2x, 4x ..., at most 2 hours."""
    return timedelta(seconds=min(base_seconds * 2 ** max(attempts - 1, 0), 7200) * random.uniform(0.8, 1.2))


_limiters: dict[tuple, object] = {}


def rate_limiter(app: Flask):
    """SEND_RATE across all workers: a bucket in Redis when there is one, else one per process."""
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
