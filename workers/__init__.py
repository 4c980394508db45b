"""The Celery app, built from the Flask app (Flask's Celery pattern).

    celery -A workers worker -Q transactional,bulk
    celery -A workers beat
"""

from celery.signals import worker_process_init, worker_process_shutdown

from newsletter import create_app
from newsletter.extensions import db

flask_app = create_app()
celery = flask_app.extensions["celery"]


@worker_process_init.connect
def _own_connections(**_):
    # A forked pool child must not share the parent's database sockets.
    with flask_app.app_context():
        db.engine.dispose(close=False)


@worker_process_shutdown.connect
def _close_smtp(**_):
    from newsletter.services.delivery import process_mailer

    with flask_app.app_context():  # closing writes any sent marks still pending (db.engine)
        process_mailer().close()


from . import tasks  # noqa: E402,F401  (registers the tasks with this app)
