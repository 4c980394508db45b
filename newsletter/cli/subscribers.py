"""`flask --app wsgi terms ...` and `flask --app wsgi subscribers ...`."""

import json

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
