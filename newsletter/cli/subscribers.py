"""`flask --app wsgi subscribers ...`: subscribers, their consent, and lists from other tools."""

import json
import sys

import click
from flask.cli import AppGroup

from ..clock import now
from ..errors import InvalidInput
from ..services import importer, subscriptions

subscribers_cli = AppGroup("subscribers", help="Subscribers and their consent.")


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
    with open(file, "rb") as handle:
        try:
            total = importer.inspect_csv(handle)  # a file it cannot read is refused before the bar starts
            with click.progressbar(length=total, label="Importing", show_pos=True, show_percent=True,
                                   file=sys.stderr) as bar:
                report = importer.import_subscribers(handle, consent_source, confirmed, now(), progress=bar.update)
        except InvalidInput as error:
            raise click.ClickException(error.message) from None
    click.echo(f"Imported {report.imported} ({'confirmed' if confirmed else 'pending, confirmation emails queued'}); "
               f"skipped {report.skipped_existing} already present, {report.skipped_suppressed} suppressed, "
               f"{report.skipped_duplicate} repeated in the file; {len(report.errors)} bad rows.")
    for line, reason in report.errors:
        click.echo(f"line {line}: {reason}", err=True)
    if report.errors:
        raise SystemExit(1)
