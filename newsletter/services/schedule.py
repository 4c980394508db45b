"""Scheduled digests: on each slot of DIGEST_SCHEDULE (cron syntax, in DIGEST_TIMEZONE), compose a
digest of what is new and send it.

Beat only ticks (every minute); this module decides. The last slot handled is kept in the
database, so a tick that finds several slots missed (the service was down) handles only the
latest one: at most one digest when it comes back, never a burst. Claiming a slot is one
conditional UPDATE, so two ticks racing each other cannot both send.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from croniter import CroniterBadCronError, croniter
from flask import current_app
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError

from ..errors import InvalidInput
from ..extensions import db
from ..models import ScheduleState
from ..times import UnknownTimeZone, find_zone

SCHEDULE_NAME = "digest"


@dataclass(frozen=True)
class TickResult:
    slot: datetime | None  # the slot handled by this tick, if any
    digest_id: int | None  # the digest it created and sent, if there was anything new


def parse_schedule(expression: str, timezone: str) -> tuple[str, ZoneInfo]:
    try:
        zone = find_zone(timezone)
    except UnknownTimeZone:
        raise InvalidInput("DIGEST_TIMEZONE", f"Unknown time zone {timezone!r} (use e.g. Europe/Paris).") from None
    if not croniter.is_valid(expression):
        raise InvalidInput("DIGEST_SCHEDULE", f"Not a cron expression: {expression!r} (e.g. '0 7 * * *').")
    return expression, zone


def latest_slot(expression: str, zone: ZoneInfo, now: datetime) -> datetime:
    """The newest slot at or before `now`, as aware UTC. Slots are computed in the schedule's zone."""
    local_now = now.astimezone(zone)
    itr = croniter(expression, local_now)
    if croniter.match(expression, local_now.replace(second=0, microsecond=0)):
        slot = local_now.replace(second=0, microsecond=0)
    else:
        slot = itr.get_prev(datetime)
    return slot.astimezone(ZoneInfo("UTC"))


def tick(now: datetime, compose_and_send) -> TickResult:
    """Handle the latest due slot once. `compose_and_send(now)` returns a digest id or None."""
    expression = current_app.config["DIGEST_SCHEDULE"]
    if not expression:
        return TickResult(None, None)
    try:
        expression, zone = parse_schedule(expression, current_app.config["DIGEST_TIMEZONE"])
    except (InvalidInput, CroniterBadCronError) as error:
        current_app.logger.error("digest schedule ignored: %s", error)
        return TickResult(None, None)
    slot = latest_slot(expression, zone, now)
    state = db.session.get(ScheduleState, SCHEDULE_NAME)
    if state is None:
        # First tick ever: start from here; a schedule switched on now does not send for the past.
        try:
            db.session.add(ScheduleState(name=SCHEDULE_NAME, last_slot=slot))
            db.session.commit()
        except IntegrityError:
            db.session.rollback()
        return TickResult(None, None)
    if slot <= state.last_slot:
        return TickResult(None, None)
    claimed = db.session.execute(
        update(ScheduleState)
        .where(ScheduleState.name == SCHEDULE_NAME, ScheduleState.last_slot == state.last_slot)
        .values(last_slot=slot)
    ).rowcount
    db.session.commit()
    if not claimed:
        return TickResult(None, None)
    return TickResult(slot, compose_and_send(now))


def compose_and_send(now: datetime) -> int | None:
    """What a due slot does: a digest of what is new, sent to everyone; nothing when nothing is new."""
    from . import delivery, digests
    from .readiness import refuse_placeholder_postal_address

    refuse_placeholder_postal_address(current_app.config)  # before composing: no draft left behind per slot
    digest = digests.create_digest(now)
    if digest is None:
        return None
    delivery.start_sending(digest.id, now)
    return digest.id
