"""`flask --app wsgi terms ...` and `flask --app wsgi subscribers ...`."""

import json
import sys

import click
from flask.cli import AppGroup

from ..clock import now
from ..errors import InvalidInput
from ..services import subscriptions
from ..services.terms import publish_terms

terms_cli = AppGroup("terms", help="Versioned consent text.")
subscribers_cli = AppGroup("subscribers", help="Subscribers and their consent.")


@terms_cli.command("publish")
@click.argument("file", type=click.File("r", encoding="utf-8"))
def terms_publish(file):
    """Publish FILE as the next version of the terms shown on the signup form."""
    try:
        terms = publish_terms(file.read(), now())
    except InvalidInput as error:
        raise click.ClickException(error.message) from None
    click.echo(f"Published terms version {terms.version} (sha256 {terms.sha256}).")


@subscribers_cli.command("consent")
@click.argument("email")
def subscribers_consent(email):
    """Print EMAIL's status and full consent history as JSON."""
    try:
        record = subscriptions.consent_record(email)
    except InvalidInput as error:
        raise click.ClickException(error.message) from None
    click.echo(json.dumps(record, indent=2, ensure_ascii=False))


@subscribers_cli.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--consent-source", required=True,
              help="Where these people consented, recorded with each of them (e.g. 'Mailchimp export 2026-10').")
@click.option("--confirmed", is_flag=True,
              help="They already confirmed elsewhere. Without it they are pending and each gets a confirmation email.")
def subscribers_import(file, consent_source, confirmed):
    """Import FILE.csv (columns: email, optional name). Present or suppressed addresses are skipped."""
    from ..queue import SEND_OUTBOUND, enqueue
    from ..services.importer import import_csv

    with open(file, encoding="utf-8-sig", newline="") as handle:
        total = max(sum(1 for _ in handle) - 1, 0)
        handle.seek(0)
        with click.progressbar(length=total, label="Importing", show_pos=True, show_percent=True,
                               file=sys.stderr) as bar:
            try:
                report = import_csv(handle, consent_source, confirmed, now(), progress=bar.update,
                                    queue_confirmation=None if confirmed else subscriptions.queue_confirmation)
            except InvalidInput as error:
                raise click.ClickException(error.message) from None
    for outbound_id in report.confirmation_ids:
        if not enqueue(SEND_OUTBOUND, outbound_id):
            break  # the outbox sweeper sends the rest once the broker is back
    click.echo(f"Imported {report.imported} ({'confirmed' if confirmed else 'pending, confirmation emails queued'}); "
               f"skipped {report.skipped_existing} already present, {report.skipped_suppressed} suppressed, "
               f"{report.skipped_duplicate} repeated in the file; {len(report.errors)} bad rows.")
    for line, reason in report.errors:
        click.echo(f"line {line}: {reason}", err=True)
    if report.errors:
        raise SystemExit(1)
