"""`flask --app wsgi digest send|pause|resume|cancel|status`: bulk delivery of a digest."""

import json
import sys
import time

import click

from ..clock import now
from ..errors import InvalidInput
from ..services import delivery
from .digests import digest_cli


def _run(action, digest_id):
    try:
        return action(digest_id, now())
    except InvalidInput as error:
        raise click.ClickException(error.message) from None


class ProgressLine:
    """sent / deferred / failed of total, rate and ETA, redrawn on one terminal line."""

    def __init__(self, stream):
        self.stream = stream
        self.started = time.monotonic()
        self.first_done = None

    def __call__(self, status: dict) -> None:
        total = status["total"] or 1
        finished = status["sent"] + status["failed"] + status["skipped"]
        elapsed = max(time.monotonic() - self.started, 1e-6)
        if self.first_done is None:
            self.first_done = finished
        rate = (finished - self.first_done) / elapsed
        remaining = status["pending"] + status["deferred"]
        eta = f"{remaining / rate:,.0f}s" if rate > 0 and remaining else "-"
        filled = int(30 * finished / total)
        bar = "#" * filled + "-" * (30 - filled)
        self.stream.write(
            f"\r[{bar}] sent {status['sent']:,} / deferred {status['deferred']:,} / failed {status['failed']:,}"
            f" of {status['total']:,}  {rate:,.0f}/s  ETA {eta}  ({status['status']})   "
        )
        self.stream.flush()


@digest_cli.command("send")
@click.argument("digest_id", type=int)
@click.option("--wait", is_flag=True, help="Show progress until the digest is done; exit 1 if any failed.")
def digest_send(digest_id, wait):
    """Send digest ID to every confirmed subscriber."""
    total = _run(delivery.start_sending, digest_id)
    click.echo(f"Digest {digest_id}: sending to {total:,} subscribers.")
    if not wait:
        return
    stream = sys.stdout
    final = delivery.wait_for(digest_id, ProgressLine(stream))
    stream.write("\n")
    click.echo(json.dumps(final))
    if final["failed"] or final["status"] != "done":
        raise SystemExit(1)


@digest_cli.command("pause")
@click.argument("digest_id", type=int)
def digest_pause(digest_id):
    """Stop handing out digest ID's deliveries (workers stop within a claim)."""
    _run(delivery.pause, digest_id)
    click.echo(f"Digest {digest_id} paused.")


@digest_cli.command("resume")
@click.argument("digest_id", type=int)
def digest_resume(digest_id):
    """Continue a paused digest exactly where it stopped."""
    _run(delivery.resume, digest_id)
    click.echo(f"Digest {digest_id} resumed.")


@digest_cli.command("cancel")
@click.argument("digest_id", type=int)
def digest_cancel(digest_id):
    """Stop digest ID for good; what was not sent is skipped."""
    _run(delivery.cancel, digest_id)
    click.echo(f"Digest {digest_id} cancelled.")


@digest_cli.command("status")
@click.argument("digest_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
def digest_status(digest_id, as_json):
    """Where digest ID's delivery stands."""
    try:
        current = delivery.status(digest_id)
    except InvalidInput as error:
        raise click.ClickException(error.message) from None
    if as_json:
        click.echo(json.dumps(current))
        return
    click.echo(f"Digest {digest_id} is {current['status']}: " + ", ".join(
        f"{current[k]:,} {k}" for k in ("total", "pending", "sent", "deferred", "failed", "skipped")))
