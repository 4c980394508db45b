"""The dev stack (`flask --app wsgi dev`: web + worker + beat + SMTP sink) in a process group of its
own, on free ports and in its own instance directory, for browser tests; stopped with everything
it started."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from config import PROJECT_DIR
from tests.support.services import free_port

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-gpu",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SIGNUP_MIN_SECONDS = 1  # the time trap, shortened; the browser still has to wait it out
STARTUP_TIMEOUT = 60
MAIL_TIMEOUT = 30
STOP_TIMEOUT = 20
# Settings that would point the dev stack at something outside its own instance directory.
FOREIGN_SETTINGS = ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "SMTP_URL", "BASE_URL",
                    "DEV_MAIL_DIR", "SECRET_KEY", "SIGNUP_RATE_LIMIT", "FLASK_APP")


# --- the dev stack ---------------------------------------------------------------------------

def _children_of(pid: int) -> list[int]:
    """Direct children of pid, read from /proc (the dev command's web, worker and beat)."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Field 4 is the parent pid; the command name (field 2) may hold spaces, so split after ')'.
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            children.append(int(entry.name))
    return children


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class DevStack:
    def __init__(self, instance_dir: Path):
        self.instance_dir = instance_dir
        self.port = free_port()
        self.smtp_port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.env = {key: value for key, value in os.environ.items() if key not in FOREIGN_SETTINGS}
        self.env.update(FLASK_DEBUG="1", INSTANCE_DIR=str(instance_dir),
                        SIGNUP_MIN_SECONDS=str(SIGNUP_MIN_SECONDS), PYTHONUNBUFFERED="1")
        self.log_path = instance_dir.parent / "dev-stack.log"
        self.process: subprocess.Popen | None = None
        self.children: list[int] = []

    def log_tail(self, lines=60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def start(self) -> None:
        self.log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "flask", "--app", "wsgi", "dev",
             "--port", str(self.port), "--smtp-port", str(self.smtp_port)],
            cwd=PROJECT_DIR, env=self.env, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the dev stack exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/subscribe", timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the dev stack did not serve /subscribe within {STARTUP_TIMEOUT}s:\n"
                                   f"{self.log_tail()}")
            time.sleep(0.25)
        self.children = _children_of(self.process.pid)

    def stop(self) -> list[int]:
        """SIGTERM the dev command, which stops its children; return any child it left behind."""
        if self.process is None:
            return []
        # Children started since start() (none expected) are included too.
        children = sorted(set(self.children) | set(_children_of(self.process.pid)))
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()
        # Each child leads its own session; after a SIGKILL above they would be orphaned.
        leftovers = [pid for pid in children if _alive(pid)]
        for pid in leftovers:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return leftovers

    def flask(self, *args: str) -> subprocess.CompletedProcess:
        """An operator command against the same instance: `flask --app wsgi ARGS`."""
        return subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", *args],
                              cwd=PROJECT_DIR, env=self.env, capture_output=True, text=True,
                              timeout=60)
