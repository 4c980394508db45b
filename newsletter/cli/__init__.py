"""Operator commands: `flask --app wsgi <group> <command>`, one module per group."""

from flask import Flask


def register(app: Flask) -> None:
    from .articles import articles_cli
    from .check import check_command
    from .dev import dev_command
    from .digest import digest_cli
    from .operators import operators_cli
    from .subscribers import subscribers_cli
    from .terms import terms_cli

    for command in (terms_cli, subscribers_cli, articles_cli, digest_cli, operators_cli, dev_command, check_command):
        app.cli.add_command(command)
