"""gunicorn settings beyond the Procfile's flags (`gunicorn --config gunicorn.conf.py ...`):
its own logs in LOG_FORMAT, and the metrics files of a worker that exited marked dead."""

from config import Config
from newsletter.logs import gunicorn_logconfig

_settings = Config()
logconfig_dict = gunicorn_logconfig(_settings.LOG_FORMAT) or {}


def child_exit(server, worker):
    # Runs in the master for every worker that exits (restart, crash, SIGKILL).
    if _settings.PROMETHEUS_MULTIPROC_DIR:
        from newsletter.metrics import mark_process_dead

        mark_process_dead(worker.pid, _settings.PROMETHEUS_MULTIPROC_DIR)
        server.log.info("worker %s exited: its metrics are marked dead", worker.pid)
