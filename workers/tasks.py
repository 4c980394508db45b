"""Thin tasks: each takes ids, calls one service, and lets the database hold the truth."""

from celery import shared_task

from newsletter.clock import now
from newsletter.queue import (DIGEST_TICK, FETCH_FEEDS, FETCH_FEEDS_NOW, PROCESS_SIGNUP, RUN_IMPORT, SEND_BATCH,
                              SEND_OUTBOUND, SEND_SCHEDULED, SWEEP_DELIVERIES, SWEEP_IMPORTS, SWEEP_OUTBOX,
                              SWEEP_SIGNUPS)
from newsletter.services import (delivery, digests, feeds, fetch_runs, import_jobs, outbox, schedule,
                                 signup_requests)


@shared_task(name=PROCESS_SIGNUP)
def process_signup(request_id: int) -> str | None:
    outcome = signup_requests.process(request_id)
    return outcome.value if outcome else None


@shared_task(name=SWEEP_SIGNUPS)
def sweep_signup_requests() -> int:
    return signup_requests.sweep(now())


@shared_task(name=SEND_OUTBOUND)
def send_outbound_email(outbound_id: int) -> str:
    return outbox.send_outbound(outbound_id, now())


@shared_task(name=SWEEP_OUTBOX)
def sweep_outbox() -> int:
    return outbox.sweep(now())


@shared_task(name=SEND_BATCH)
def send_delivery_batch(digest_id: int, first_id: int, last_id: int) -> dict:
    return delivery.send_range(digest_id, first_id, last_id, now)


@shared_task(name=SWEEP_DELIVERIES)
def sweep_deliveries() -> int:
    return delivery.sweep(now())


@shared_task(name=DIGEST_TICK)
def digest_schedule_tick() -> int | None:
    return schedule.tick(now(), schedule.compose_and_send).digest_id


@shared_task(name=FETCH_FEEDS)
def fetch_feeds() -> list[str]:
    return [report.describe() for report in feeds.fetch_configured(now())]


@shared_task(name=SEND_SCHEDULED)
def send_scheduled_digests() -> list[int]:
    return digests.send_due_scheduled(now())


@shared_task(name=FETCH_FEEDS_NOW)
def fetch_feeds_now(run_id: int) -> str | None:
    status = fetch_runs.run_fetch(run_id, now)
    return status.value if status else None


@shared_task(name=RUN_IMPORT)
def run_import_job(job_id: int) -> str | None:
    state = import_jobs.run_job(job_id, now)
    return state.value if state else None


@shared_task(name=SWEEP_IMPORTS)
def sweep_import_jobs() -> int:
    return import_jobs.sweep(now())
