"""The Celery app, built from the Flask app (Flask's Celery pattern).

    celery -A workers worker -Q transactional,bulk
    celery -A workers beat
"""

from newsletter import create_app

flask_app = create_app()
celery = flask_app.extensions["celery"]

from . import tasks  # noqa: E402,F401  (registers the tasks with this app)
