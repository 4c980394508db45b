"""`flask --app wsgi dev`: the whole service on one machine, on embedded defaults.

Starts a local SMTP sink (its mail readable at /dev/mail), then the web server, a Celery worker and
Celery beat as child processes, exactly as the Procfile would, and stops them all together.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import click
from flask import current_app
from flask.cli import with_appcontext

from config import PROJECT_DIR

if TYPE_CHECKING:
    from aiosmtpd.controller import Controller


class MailSink:
    """aiosmtpd handler that keeps every message as an .eml file for the dev mail viewer."""

    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    async def handle_DATA(self, server, session, envelope):
        received = datetime.now(timezone.utc)
        name = f"{received:%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:8]}.eml"
        trace = (f"X-Received-At: {received.isoformat(timespec='seconds')}\r\n"
                 f"X-Envelope-To: {', '.join(envelope.rcpt_tos)}\r\n").encode()
        tmp = self.folder / (name + ".tmp")
        tmp.write_bytes(trace + envelope.original_content)
        tmp.rename(self.folder / name)  # the viewer never sees half a message
        return "250 Message accepted for delivery"


def start_mail_sink(folder: Path, host: str, port: int) -> Controller:
    # Imported here: web and worker processes load this module with the CLI, never the sink.
    from aiosmtpd.controller import Controller

    controller = Controller(MailSink(folder), hostname=host, port=port)
    controller.start()
    return controller


@click.command("dev")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, help="Web port.")
@click.option("--smtp-port", default=8025, show_default=True, help="Port of the local SMTP sink.")
@with_appcontext
def dev_command(host, port, smtp_port):
    """Run web + worker + beat + a local SMTP sink, on embedded defaults."""
    from flask_migrate import upgrade

    app = current_app._get_current_object()
    upgrade()
    env = dict(os.environ,
               FLASK_DEBUG="1",
               DEV_MAIL_VIEWER="1",
               SMTP_URL=f"smtp://{host}:{smtp_port}",
               BASE_URL=os.environ.get("BASE_URL") or f"http://{host}:{port}",
               OUTBOX_SWEEP_SECONDS=os.environ.get("OUTBOX_SWEEP_SECONDS") or "10",
               PYTHONUNBUFFERED="1")
    if app.config["METRICS_ENABLED"] and not app.config["PROMETHEUS_MULTIPROC_DIR"]:
        env["PROMETHEUS_MULTIPROC_DIR"] = str(_fresh_metrics_dir(app.config["INSTANCE_DIR"] / "prometheus"))
    sink = start_mail_sink(app.config["DEV_MAIL_DIR"], host, smtp_port)
    python = sys.executable
    commands = {
        "web": [python, "-m", "flask", "--app", "wsgi", "run", "--host", host, "--port", str(port), "--no-reload"],
        "worker": [python, "-m", "celery", "-A", "workers", "worker", "-Q", "transactional,bulk",
                   "--pool", "solo", "--loglevel", "INFO"],
        "beat": [python, "-m", "celery", "-A", "workers", "beat", "--loglevel", "INFO"],
    }
    click.echo(f"SMTP sink on {host}:{smtp_port}; mail is readable at {env['BASE_URL']}/dev/mail")
    children = {name: subprocess.Popen(cmd, cwd=PROJECT_DIR, env=env, start_new_session=True)
                for name, cmd in commands.items()}
    click.echo(f"Newsletter running at {env['BASE_URL']}/ (Ctrl-C stops everything)")

    stopping = []
    def stop(signum, frame):
        stopping.append(signum)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    exit_code = 0
    try:
        while not stopping:
            for name, child in children.items():
                if child.poll() is not None:
                    click.echo(f"{name} exited with {child.returncode}; stopping the others", err=True)
                    exit_code = child.returncode or 1
                    stopping.append(name)
                    break
            time.sleep(0.3)
    finally:
        for child in children.values():
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for child in children.values():
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
        sink.stop()
    sys.exit(exit_code)


def _fresh_metrics_dir(directory: Path) -> Path:
    """Where web and worker write their counters, so /metrics shows the worker's sends too; emptied
    at each start, as prometheus_client asks."""
    directory.mkdir(parents=True, exist_ok=True)
    for leftover in directory.glob("*.db"):
        leftover.unlink()
    return directory
