"""The web entry point (`gunicorn wsgi:app`, `flask --app wsgi ...`): logging and error reports
are set up here, once per process, before the app exists."""

from config import Config
from newsletter import create_app
from newsletter.cli.check import app_or_check_only
from newsletter.error_reports import init_error_reports
from newsletter.logs import configure_logging


def _load():
    settings = Config()
    configure_logging(settings.LOG_FORMAT, settings.LOG_LEVEL)
    init_error_reports(settings.SENTRY_DSN)
    return create_app()


# A refused configuration stops gunicorn here; `flask --app wsgi check` still lists what to fix.
app = app_or_check_only(_load)
