"""`flask --app wsgi operators ...`: console accounts."""

import sys

import click
from flask.cli import AppGroup

from ..clock import now
from ..errors import InvalidInput
from ..services.operators import create_operator

operators_cli = AppGroup("operators", help="Console operators.")


@operators_cli.command("create")
@click.argument("email")
@click.option("--role", required=True, type=click.Choice(["admin", "editor", "viewer"]))
def operators_create(email, role):
    """Create an operator. The password is asked for (or read from stdin), never an argument."""
    if sys.stdin.isatty():
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    try:
        operator = create_operator(email, role, password, now())
    except InvalidInput as error:
        raise click.ClickException(error.message) from None
    click.echo(f"Operator {operator.email} ({operator.role.value}) created.")
