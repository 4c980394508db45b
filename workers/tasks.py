"""Thin tasks: each takes ids, calls one service, and lets the database hold the truth."""

from celery import shared_task

from newsletter.clock import now
from newsletter.queue import SEND_OUTBOUND, SWEEP_OUTBOX
from newsletter.services import outbox


@shared_task(name=SEND_OUTBOUND)
def send_outbound_email(outbound_id: int) -> str:
    return outbox.send_outbound(outbound_id, now())


@shared_task(name=SWEEP_OUTBOX)
def sweep_outbox() -> int:
    return outbox.sweep(now())
