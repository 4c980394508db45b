"""A benchmark's child processes: each in a session of its own, logging to a file, stopped with
everything it started (prefork children, gunicorn workers)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent


class Proc:
    """A child in a session of its own (so its children can be stopped with it), logging to a file."""

    def __init__(self, name: str, argv: list[str], env: dict | None, log_dir: Path, stdin=subprocess.DEVNULL,
                 stdout=None):
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "ab")
        self.popen = subprocess.Popen(argv, cwd=PROJECT_DIR, env=env, stdin=stdin,
                                      stdout=stdout if stdout is not None else self._log,
                                      stderr=self._log if stdout is None else self._log,
                                      start_new_session=True, text=stdout is not None)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_for_log(self, needle: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.log():
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.popen.returncode}:\n{self.log()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not log {needle!r} in {timeout}s:\n{self.log()[-3000:]}")
            time.sleep(0.1)

    def stop(self, grace: float = 15) -> None:
        """SIGTERM to its process group (warm shutdown), SIGKILL to the group after `grace` seconds."""
        try:
            if self.popen.poll() is None:
                _killpg(self.pid, signal.SIGTERM)
                try:
                    self.popen.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    pass
            _killpg(self.pid, signal.SIGKILL)  # whatever is left of the group (prefork children)
            if self.popen.poll() is None:
                self.popen.wait(timeout=10)
        finally:
            self._log.close()


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def wait_for_health(healthz_status, web: Proc, timeout: float = 60) -> None:
    """Until GET /healthz answers 200 (`healthz_status()` makes the request and returns its status),
    or the web process exits, or the time is up."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if healthz_status() == 200:
                return
        except OSError:
            pass
        if web.popen.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"gunicorn did not answer /healthz:\n{web.log()[-3000:]}")
        time.sleep(0.1)
