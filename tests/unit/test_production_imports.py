"""What a production process loads: gunicorn's create_app and Celery's `workers` never import the
development-only SMTP sink that `flask dev` starts."""

import os
import subprocess
import sys

from config import PROJECT_DIR

# Run in a fresh interpreter: the test process itself has aiosmtpd loaded (tests' SMTP server).
PROBE = """
import importlib.util, sys
assert importlib.util.find_spec("aiosmtpd") is not None, "aiosmtpd is not installed: the check would prove nothing"
from newsletter import create_app
create_app()
import workers
assert "newsletter.cli.dev" in sys.modules, "the dev command was not registered: the check would prove nothing"
print(sorted(name for name in sys.modules if name.partition(".")[0] == "aiosmtpd"))
"""


def test_web_and_worker_processes_never_import_the_dev_smtp_sink(tmp_path):
    env = {name: value for name, value in os.environ.items()
           if name not in ("DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL", "FLASK_DEBUG", "DEV_MAIL_VIEWER")}
    env.update(SECRET_KEY="a-production-secret-" + "x" * 40, INSTANCE_DIR=str(tmp_path))
    result = subprocess.run([sys.executable, "-c", PROBE], cwd=PROJECT_DIR, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"
