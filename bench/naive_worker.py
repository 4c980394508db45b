"""The naive baseline's Celery app: one task per email, everything rendered per recipient.

    celery -A bench.naive_worker worker -Q bulk --pool solo     (cwd: the project directory)

Built from the Flask app exactly like `workers` (configured through the environment), plus one
task. Each task does what a straightforward implementation does for one email: load the digest
(and its articles) and the subscriber, render both Jinja2 templates, inline the CSS with
css_inline, build the message with the email package (bench/render.py's naive path) and send it.
The SMTP connection is the worker process's one, reused across tasks (a connection per task would
make the baseline slower still). No delivery row is written or updated.
"""

from celery.signals import worker_process_shutdown

from newsletter import create_app
from newsletter.clock import utcnow
from newsletter.extensions import db
from newsletter.infra.smtp import SmtpConnection, connection_from_config
from newsletter.mail.compose import sender_address, sender_domain
from newsletter.mail.digest import digest_context, list_id, one_line
from newsletter.models import Digest, Subscriber
from newsletter.queue import own_database_connections_per_child

from .render import naive_message

NAIVE_SEND = "bench.naive.send_one"  # bench/digest.py names it too

flask_app = create_app()
celery = flask_app.extensions["celery"]
own_database_connections_per_child(flask_app)
_connection: SmtpConnection | None = None


@worker_process_shutdown.connect
def _close_smtp(**_):
    if _connection is not None:
        _connection.close()


def connection() -> SmtpConnection:
    global _connection
    if _connection is None:
        _connection = connection_from_config(flask_app.config)
    return _connection


@celery.task(name=NAIVE_SEND)
def send_one(digest_id: int, subscriber_id: int) -> None:
    config = flask_app.config
    digest = db.session.get(Digest, digest_id)
    person = db.session.get(Subscriber, subscriber_id)
    now = utcnow()
    subject = one_line(digest.subject) or config["SITE_NAME"]
    context = digest_context(digest, now, subject)
    domain = sender_domain()
    headers = {"List-Id": list_id(config, domain), "Feedback-ID": f"digest-{digest.id}:newsletter:{domain}",
               "Precedence": "bulk"}
    message = naive_message(digest, context, headers, person.id, person.email, person.name, now)
    connection().send(message, sender_address(), person.email)
    db.session.remove()
