"""A short Python script run in a process of its own, from the project directory: for what only a
fresh process shows (an entry point's logging, error reports, metrics files of another process)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from config import PROJECT_DIR

SCRIPT_TIMEOUT = 60
# Nothing from the outer environment may redirect the script.
CLEARED = ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "LOG_FORMAT", "LOG_LEVEL", "SENTRY_DSN",
           "METRICS_ENABLED", "PROMETHEUS_MULTIPROC_DIR", "DEV_MAIL_VIEWER", "FLASK_DEBUG")


def run_python(code: str, **env) -> subprocess.CompletedProcess:
    environment = {name: value for name, value in os.environ.items() if name not in CLEARED}
    environment.update({name: str(value) for name, value in env.items()})
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=PROJECT_DIR, env=environment,
                            capture_output=True, text=True, timeout=SCRIPT_TIMEOUT, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, f"script failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    return result


def run_flask(*args: str, **env) -> subprocess.CompletedProcess:
    """`flask --app wsgi ARGS` in a process of its own, on the embedded defaults but for `env`: no
    setting of the outer environment reaches it. Returns whatever the command did."""
    from config import SETTINGS

    declared = {setting.name for setting in SETTINGS}
    environment = {name: value for name, value in os.environ.items() if name not in CLEARED and name not in declared}
    environment.update({name: str(value) for name, value in env.items()})
    return subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", *args], cwd=PROJECT_DIR, env=environment,
                          capture_output=True, text=True, timeout=SCRIPT_TIMEOUT, stdin=subprocess.DEVNULL)
