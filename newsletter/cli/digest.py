"""`flask --app wsgi digest ...`: compose, preview and test-send digests; send, pause, resume,
cancel and watch their delivery."""

import json
from datetime import datetime
from pathlib import Path

import click
from flask import current_app
from flask.cli import AppGroup

from ..clock import now
from ..errors import InvalidInput, PermanentMailError, TransientMailError
from ..services import delivery, digests
from ..times import UnknownTimeZone, find_zone, parse_iso

digest_cli = AppGroup("digest", help="Digests: create, preview, test-send.")

NOTHING_NEW = "No new articles since the last digest; nothing created."


@digest_cli.command("create")
@click.option("--subject", help="Subject line (default: the site name, the newest title and how many more).")
@click.option("--since", "since_text", metavar="WHEN",
              help="Take the articles published (or, undated, added) since WHEN instead of those not sent yet; "
                   "ISO 8601 date or date-time, in DIGEST_TIMEZONE unless it gives an offset.")
@click.option("--intro", help="A short text shown above the articles.")
@click.option("--json", "as_json", is_flag=True, help='Print {"id": ..., "articles": N, "subject": ...}.')
def digest_create(subject, since_text, intro, as_json):
    """Compose a draft digest of the articles readers have not had yet, newest first."""
    since = parse_when(since_text, current_app.config["DIGEST_TIMEZONE"]) if since_text else None
    try:
        digest = digests.create_digest(now(), subject=subject, since=since, intro=intro)
    except InvalidInput as error:
        raise click.ClickException(error.message) from None
    if digest is None:
        click.echo(json.dumps({"id": None, "articles": 0, "subject": None}) if as_json else NOTHING_NEW)
        return
    count = len(digest.items)
    if as_json:
        click.echo(json.dumps({"id": digest.id, "articles": count, "subject": digest.subject}, ensure_ascii=False))
        return
    click.echo(f"Created draft digest {digest.id} with {count} article{'s' if count != 1 else ''}: {digest.subject}")
    if since is None and count == digests.MAX_ARTICLES:
        waiting = len(digests.new_articles()) - count
        if waiting > 0:
            click.echo(f"{waiting} older new article{'s wait' if waiting != 1 else ' waits'} for the next digest "
                       f"(at most {digests.MAX_ARTICLES} per digest).")


@digest_cli.command("preview")
@click.argument("digest_id", type=int)
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Directory for digest.html, digest.txt and digest.eml (created if missing).")
def digest_preview(digest_id, out_dir):
    """Write DIGEST_ID as a sample reader would get it: the HTML, the text, the whole message."""
    try:
        files = digests.preview(digest_id, now())
    except ValueError as error:  # InvalidInput, DKIM settings
        raise click.ClickException(getattr(error, "message", str(error))) from None
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (out_dir / name).write_bytes(content)
        click.echo(str(out_dir / name))


@digest_cli.command("test-send")
@click.argument("digest_id", type=int)
@click.option("--to", "address", required=True, metavar="EMAIL", help="Any address; it need not be subscribed.")
def digest_test_send(digest_id, address):
    """Send one copy of DIGEST_ID, marked as a test, through the SMTP relay."""
    try:
        subject = digests.send_test_copy(digest_id, address, now())
    except ValueError as error:  # InvalidInput (digest, address), SMTP_URL, DKIM settings
        raise click.ClickException(getattr(error, "message", str(error))) from None
    except (TransientMailError, PermanentMailError) as error:
        raise click.ClickException(f"The relay did not take the test message: {error}") from None
    click.echo(f"Sent a test copy of digest {digest_id} to {address.strip()}: {subject}")


def parse_when(text: str, zone_name: str) -> datetime:
    """An ISO 8601 date or date-time as aware UTC; without an offset it is in `zone_name`."""
    try:
        zone = find_zone(zone_name)
    except UnknownTimeZone:
        raise click.ClickException(f"DIGEST_TIMEZONE {zone_name!r} is not a time zone.") from None
    try:
        return parse_iso(text, zone)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not an ISO 8601 date or date-time (e.g. 2026-11-01 or "
                                 "2026-11-01T08:00:00Z).", param_hint="--since") from None


# --- delivery ------------------------------------------------------------------------------------


def _run(action, digest_id):
    try:
        return action(digest_id, now())
    except InvalidInput as error:
        raise click.ClickException(error.message) from None


def progress_text(figures: dict) -> str:
    return (f"sent {figures['sent']:,} / deferred {figures['deferred']:,} / failed {figures['failed']:,}"
            f" of {figures['total']:,}  {figures['rate_text']}  ETA {figures['eta_text']}  ({figures['status']})")


@digest_cli.command("send")
@click.argument("digest_id", type=int)
@click.option("--wait", is_flag=True, help="Show progress until the digest is done; exit 1 if any failed.")
def digest_send(digest_id, wait):
    """Send digest ID to every confirmed subscriber."""
    total = _run(delivery.start_sending, digest_id)
    click.echo(f"Digest {digest_id}: sending to {total:,} subscribers.")
    if not wait:
        return
    figures = delivery.progress(digest_id, now())
    # The label carries the figures: a terminal gets the bar redrawn in place, a pipe or a log
    # gets click's plain fallback, the label printed again each time it changes.
    with click.progressbar(length=figures["total"], label=progress_text(figures), bar_template="[%(bar)s] %(label)s",
                           show_eta=False, show_percent=False, empty_char="-", width=30,
                           update_min_steps=0) as bar:  # 0: redraw when only deferred or the rate moved

        def show(_status):
            current = delivery.progress(digest_id, now())  # the console's figures, not wait_for's counts
            bar.label = progress_text(current)
            bar.update(current["finished"] - bar.pos)

        final = delivery.wait_for(digest_id, show)
    click.echo(json.dumps(final))
    if final["failed"] or final["status"] != "done":
        raise SystemExit(1)


def _control_command(name: str, done: str, help_text: str) -> None:
    """`digest pause|resume|cancel ID`: the delivery control of that name, then what became of the digest."""

    @digest_cli.command(name, help=help_text)
    @click.argument("digest_id", type=int)
    def control(digest_id):
        _run(getattr(delivery, name), digest_id)
        click.echo(f"Digest {digest_id} {done}.")


_control_command("pause", "paused", "Stop handing out digest ID's deliveries (workers stop within a claim).")
_control_command("resume", "resumed", "Continue a paused digest exactly where it stopped.")
_control_command("cancel", "cancelled", "Stop digest ID for good; what was not sent is skipped.")


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
