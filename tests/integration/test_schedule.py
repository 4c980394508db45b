"""Scheduled digests: one per due slot, and only one however many slots were missed."""

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from newsletter.errors import InvalidInput
from newsletter.extensions import db
from newsletter.models import Article, Delivery, Digest, Subscriber, SubscriberStatus
from newsletter.services import schedule


def add_article(n, clock):
    db.session.add(Article(key=f"https://news.example.org/{n}", url=f"https://news.example.org/{n}",
                           title=f"Story {n}", summary_html="<p>…</p>", created_at=clock(),
                           updated_at=clock(), published_at=clock()))
    db.session.commit()


def tick(app, clock):
    with app.app_context():
        return schedule.tick(clock(), schedule.compose_and_send)


def digests(app):
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(Digest))


@pytest.fixture
def scheduled(app, clock):
    app.config.update(DIGEST_SCHEDULE="0 7 * * *", DIGEST_TIMEZONE="Europe/Paris")
    clock.current = datetime(2026, 11, 2, 5, 30, tzinfo=timezone.utc)  # 06:30 in Paris
    with app.app_context():
        db.session.add(Subscriber(email="reader@example.com", status=SubscriberStatus.CONFIRMED, created_at=clock()))
        db.session.commit()
        add_article(1, clock)
    return app


def test_first_tick_starts_the_schedule_without_sending_for_the_past(scheduled, clock):
    assert tick(scheduled, clock).digest_id is None
    assert digests(scheduled) == 0


def test_a_due_slot_composes_and_sends_one_digest(scheduled, clock):
    tick(scheduled, clock)
    clock.advance(minutes=29)  # 06:59 Paris
    assert tick(scheduled, clock).digest_id is None
    clock.advance(minutes=1)  # 07:00 Paris = 06:00 UTC in November
    result = tick(scheduled, clock)
    assert result.slot == datetime(2026, 11, 2, 6, 0, tzinfo=timezone.utc)
    assert result.digest_id is not None
    with scheduled.app_context():
        assert db.session.scalar(select(func.count()).select_from(Delivery)) == 1
    clock.advance(seconds=30)
    assert tick(scheduled, clock).digest_id is None  # the same slot, ticked again
    assert digests(scheduled) == 1


def test_slots_missed_while_down_send_at_most_one_digest(scheduled, clock):
    tick(scheduled, clock)
    clock.advance(days=3, hours=2)  # down for three mornings
    with scheduled.app_context():
        add_article(2, clock)
    results = [tick(scheduled, clock) for _ in range(3)]
    assert [r.digest_id is not None for r in results] == [True, False, False]
    assert digests(scheduled) == 1
    assert results[0].slot == datetime(2026, 11, 5, 6, 0, tzinfo=timezone.utc)  # only the latest slot


def test_a_slot_with_nothing_new_sends_nothing_and_is_still_used_up(scheduled, clock):
    tick(scheduled, clock)
    clock.advance(hours=1)
    first = tick(scheduled, clock)
    assert first.digest_id is not None
    clock.advance(days=1)
    second = tick(scheduled, clock)
    assert second.slot is not None and second.digest_id is None  # everything went in the first
    assert digests(scheduled) == 1


def test_schedule_is_computed_in_its_time_zone_across_dst():
    zone = ZoneInfo("Europe/Paris")
    summer = schedule.latest_slot("0 7 * * *", zone, datetime(2026, 7, 1, 5, 30, tzinfo=timezone.utc))
    assert summer == datetime(2026, 7, 1, 5, 0, tzinfo=timezone.utc)  # 07:00 CEST
    winter = schedule.latest_slot("0 7 * * *", zone, datetime(2026, 12, 1, 5, 30, tzinfo=timezone.utc))
    assert winter == datetime(2026, 11, 30, 6, 0, tzinfo=timezone.utc)  # yesterday 07:00 CET


def test_bad_schedule_settings_are_reported_and_send_nothing(app, clock):
    with pytest.raises(InvalidInput, match="Not a cron expression"):
        schedule.parse_schedule("every morning", "UTC")
    with pytest.raises(InvalidInput, match="Unknown time zone"):
        schedule.parse_schedule("0 7 * * *", "Mars/Olympus")
    app.config.update(DIGEST_SCHEDULE="every morning")
    assert tick(app, clock).digest_id is None
