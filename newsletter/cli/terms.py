"""`flask --app wsgi terms ...`: the versioned consent text."""

import click
from flask.cli import AppGroup

from ..clock import now
from ..errors import InvalidInput
from ..services.terms import publish_terms

terms_cli = AppGroup("terms", help="Versioned consent text.")


@terms_cli.command("publish")
@click.argument("file", type=click.File("r", encoding="utf-8"))
def terms_publish(file):
    """Publish FILE as the next version of the terms shown on the signup form."""
    try:
        terms = publish_terms(file.read(), now())
    except InvalidInput as error:
        raise click.ClickException(error.message) from None
    click.echo(f"Published terms version {terms.version} (sha256 {terms.sha256}).")
