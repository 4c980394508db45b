"""`flask --app wsgi check [--deploy]`: the settings that are placeholders or unsafe for production.

It must also answer when the service refuses its configuration (the built-in SECRET_KEY outside
debug, a DKIM key it cannot read): wsgi.py then gives Flask's command line an app that can only
run this command, so the refusal becomes a finding instead of a traceback.
"""

from __future__ import annotations

from collections.abc import Callable

import click
from flask import Flask, current_app
from flask.cli import AppGroup, ScriptInfo

from config import Config

from .. import InsecureConfiguration
from ..services.readiness import ERROR, WARNING, Finding, findings

REFUSAL = "newsletter.refusal"  # app.extensions key: why create_app refused, on the check-only app


@click.command("check")
@click.option("--deploy", is_flag=True, help="Production readiness: exit 1 while any error remains.")
def check_command(deploy):
    """List the settings that are placeholders or unsafe for production, each with its fix."""
    refusal = current_app.extensions.get(REFUSAL)
    if refusal is not None and not isinstance(refusal, InsecureConfiguration):
        # Config() itself failed: there are no settings to judge.
        click.echo(f"{ERROR}: configuration: {refusal} Fix: correct that variable.")
        raise click.exceptions.Exit(1)
    found = findings(current_app.config, current_app.config["READINESS_TIMEOUT"])
    if refusal is not None and not any(finding.severity == ERROR for finding in found):
        found.append(Finding("startup", ERROR, f"the service refuses to start: {refusal}", "see the message."))
    for finding in found:
        click.echo(finding.line())
    errors = sum(finding.severity == ERROR for finding in found)
    warnings = sum(finding.severity == WARNING for finding in found)
    click.echo(f"check: {_count(errors, 'error')}, {_count(warnings, 'warning')}."
               if found else "check: no errors, no warnings: ready for production.")
    if deploy and errors:
        raise click.exceptions.Exit(1)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def app_or_check_only(load: Callable[[], Flask]) -> Flask:
    """`load()`'s app. When it refuses the configuration while Flask's command line looks up a
    command, an app that can only `check` instead; anywhere else (gunicorn, `import wsgi`) the
    refusal stands."""
    try:
        return load()
    except (InsecureConfiguration, ValueError) as refusal:  # ValueError: a setting that does not parse
        context = click.get_current_context(silent=True)
        if context is None or context.find_object(ScriptInfo) is None:
            raise
        return _check_only_app(refusal)


class _OnlyCheck(AppGroup):
    """The check-only app's commands: `check`, and the refusal for any other."""

    def __init__(self, refusal: Exception):
        super().__init__()
        self.refusal = refusal
        self.add_command(check_command)

    def get_command(self, ctx, name):
        command = super().get_command(ctx, name)
        if command is not None:
            return command
        if isinstance(self.refusal, InsecureConfiguration):
            raise click.ClickException(f"{self.refusal}\n(`flask --app wsgi check` lists everything to fix.)")
        raise self.refusal


def _check_only_app(refusal: Exception) -> Flask:
    app = Flask(__name__)
    if isinstance(refusal, InsecureConfiguration):  # the settings load; the service will not run with them
        app.config.from_object(Config())
    app.extensions[REFUSAL] = refusal
    app.cli = _OnlyCheck(refusal)

    def refuse(environ, start_response):  # `flask run` serves nothing with a refused configuration
        raise refusal

    app.wsgi_app = refuse
    return app
