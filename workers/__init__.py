"""The Celery app, built from the Flask app (Flask's Celery pattern).

    celery -A workers worker -Q transactional,bulk
    celery -A workers beat

Logging and error reports are set up here, once per process, before the app exists.
"""

import logging
import os

from celery.signals import (
    celeryd_after_setup,
    setup_logging,
    task_postrun,
    task_prerun,
    worker_process_shutdown,
)

from config import Config
from newsletter import create_app
from newsletter.error_reports import init_error_reports
from newsletter.logs import configure_logging, enter_task, leave_task
from newsletter.queue import own_database_connections_per_child

settings = Config()
configure_logging(settings.LOG_FORMAT, settings.LOG_LEVEL)
init_error_reports(settings.SENTRY_DSN)

flask_app = create_app()
celery = flask_app.extensions["celery"]
own_database_connections_per_child(flask_app)


@setup_logging.connect
def _keep_our_logging(loglevel=None, **_):
    # Connected, Celery leaves the handlers configured above alone; only --loglevel applies.
    if loglevel:
        logging.getLogger().setLevel(loglevel)


@celeryd_after_setup.connect
def _no_banner_in_json(instance=None, **_):
    # The worker prints its banner right after this signal, outside logging: not JSON.
    if settings.LOG_FORMAT == "json":
        instance.quiet = True


@task_prerun.connect
def _log_task(task_id=None, task=None, **_):
    enter_task(task_id, task.name)


@task_postrun.connect
def _log_task_done(**_):
    leave_task()


@worker_process_shutdown.connect
def _close_smtp(**_):
    from newsletter.services.delivery import process_mailer

    with flask_app.app_context():  # closing writes any sent marks still pending (db.engine)
        process_mailer().close()


@worker_process_shutdown.connect
def _metrics_process_dead(**_):
    from newsletter.metrics import mark_process_dead

    mark_process_dead(os.getpid(), settings.PROMETHEUS_MULTIPROC_DIR)


from . import tasks  # noqa: E402,F401  (registers the tasks with this app)
