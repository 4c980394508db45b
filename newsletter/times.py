"""Time in one place: ISO 8601 out (UTC, 'Z') and in, and IANA time zone lookup."""

from __future__ import annotations

from datetime import datetime, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

UTC = timezone.utc


class UnknownTimeZone(ValueError):
    """Not an IANA time zone name."""


def iso_z(value: datetime | None) -> str | None:
    """An aware time as ISO 8601 with 'Z' for UTC (what JSON, CSV and the ledger show)."""
    return value.isoformat().replace("+00:00", "Z") if value else None


def parse_iso(raw: str, zone: tzinfo = UTC) -> datetime:
    """An ISO 8601 date or date-time as aware UTC; one without an offset is read in `zone`.
    Raises ValueError for anything else."""
    try:
        value = datetime.fromisoformat(raw.strip())
        if value.tzinfo is None:
            value = value.replace(tzinfo=zone)
        return value.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+14:00 is before the first UTC moment
        raise ValueError(f"out of range: {raw!r}") from None


def find_zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise UnknownTimeZone(name) from None


def zone_or_utc(name: str) -> ZoneInfo:
    """For display, where a bad setting must not stop a page or an email."""
    try:
        return find_zone(name)
    except UnknownTimeZone:
        return ZoneInfo("UTC")
