"""A clock the tests move by hand: services take `now`, the app reads it from config CLOCK."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone


class FrozenClock:
    def __init__(self, start: datetime | None = None):
        self.current = start or datetime(2026, 11, 2, 9, 0, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.current

    def advance(self, **kwargs) -> None:
        self.current += timedelta(**kwargs)
