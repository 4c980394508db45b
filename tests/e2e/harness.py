"""Real processes for end-to-end tests: Celery workers and beat started the way the Procfile
starts them, configured only through the environment, each logging to a file; databases and
brokers of their own per test; everything torn down, processes first, whatever happened."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from config import PROJECT_DIR
from newsletter import create_app
from newsletter.extensions import db
from tests.support.database import base_config, drop_pg_database, make_pg_database
from tests.support.waiting import wait_until  # noqa: F401  (the e2e tests import it from here)

BASE_URL = "https://news.example.org"  # what base_config gives the web app; the worker gets the same
MAIL_FROM = "Example News <news@news.example.org>"
SECRET_KEY = "test-secret-key"
MAIL_POSTAL_ADDRESS = "Example News Ltd, 1 High Street, Springfield"

READY_TIMEOUT = 60
MAIL_TIMEOUT = 30


# --- processes -----------------------------------------------------------------------------------


class Process:
    """One child process, its stdout and stderr in a log file."""

    def __init__(self, name: str, argv: list[str], env: dict, log_path: Path):
        self.name = name
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.popen = subprocess.Popen(argv, cwd=PROJECT_DIR, env=env, stdin=subprocess.DEVNULL,
                                      stdout=self._log, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_for_log(self, pattern: str, timeout: float = READY_TIMEOUT, count: int = 1) -> None:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(regex.findall(self.log())) >= count:
                return
            if self.popen.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.popen.returncode} before logging "
                                     f"{pattern!r}:\n{self.log()}")
            time.sleep(0.1)
        raise AssertionError(f"{self.name} did not log {pattern!r} {count} time(s) in {timeout}s:\n{self.log()}")

    def count(self, pattern: str) -> int:
        return len(re.findall(pattern, self.log()))

    def kill9(self) -> None:
        """What the OOM killer or a lost machine does: no warm shutdown, no acknowledgements."""
        os.kill(self.pid, signal.SIGKILL)
        self.popen.wait(timeout=10)

    def stop(self) -> None:
        try:
            if self.popen.poll() is None:
                self.popen.terminate()  # warm shutdown: finishes the task in hand
                try:
                    self.popen.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.popen.kill()
                    self.popen.wait(timeout=10)
        finally:
            self._log.close()


class Harness:
    """Databases, brokers, apps and processes of one test, torn down processes first."""

    def __init__(self, request, tmp_path: Path, smtp):
        self.request = request
        self.tmp_path = tmp_path
        self.smtp = smtp
        self.instance_dir = tmp_path / "instance"
        self.processes: list[Process] = []
        self._cleanups: list = []

    def cleanup(self, fn) -> None:
        self._cleanups.append(fn)

    # databases and brokers

    def postgres(self) -> str:
        pg_server = self.request.getfixturevalue("pg_server")  # skips (or fails in CI) without PostgreSQL
        url = make_pg_database(pg_server)
        self.cleanup(lambda: drop_pg_database(pg_server, url))
        return url

    def sqlite(self) -> str:
        return f"sqlite:///{self.tmp_path / 'newsletter.sqlite'}"

    def redis(self, number: int) -> str:
        """A Redis database of its own for one test, empty before and after."""
        server = self.request.getfixturevalue("redis_server")  # the run's own redis-server
        client = server.client(number)
        client.flushdb()

        def flush():
            try:
                client.flushdb()
            finally:
                client.close()

        self.cleanup(flush)
        return server.url(number)

    # the web side, in this process

    def app(self, database_url: str, broker_url: str, **overrides):
        config = base_config(self.tmp_path, self.smtp.url, database_url, clock=None)
        config.update(CELERY_BROKER_URL=broker_url, SIGNUP_MIN_SECONDS=0, **overrides)
        assert config["BASE_URL"] == BASE_URL and config["MAIL_FROM"] == MAIL_FROM
        app = create_app(config)
        with app.app_context():
            db.create_all()

        def dispose():
            with app.app_context():
                db.session.remove()
                db.engine.dispose()
            app.extensions["celery"].close()

        self.cleanup(dispose)
        return app

    # the worker side, in child processes

    def env(self, database_url: str, broker_url: str, **extra) -> dict:
        env = dict(os.environ)
        for name in ("REDIS_URL", "DEV_MAIL_DIR", "DEV_MAIL_VIEWER"):
            env.pop(name, None)  # nothing from the outer environment may redirect the children
        env.update(
            SECRET_KEY=SECRET_KEY,
            DATABASE_URL=database_url,
            CELERY_BROKER_URL=broker_url,
            SMTP_URL=self.smtp.url,
            SMTP_TIMEOUT="10",
            MAIL_FROM=MAIL_FROM,
            MAIL_POSTAL_ADDRESS=MAIL_POSTAL_ADDRESS,  # outside testing no digest is sent without it
            BASE_URL=BASE_URL,
            INSTANCE_DIR=str(self.instance_dir),
            FLASK_DEBUG="0",
            PYTHONUNBUFFERED="1",
        )
        if broker_url.startswith("redis://"):
            env["REDIS_URL"] = broker_url  # as in production: the broker's Redis also keeps the sent journal
        env.update({name: str(value) for name, value in extra.items()})
        return env

    def start(self, name: str, argv: list[str], env: dict) -> Process:
        process = Process(name, argv, env, self.tmp_path / f"{name}.log")
        self.processes.append(process)
        return process

    def worker(self, database_url: str, broker_url: str, wait: bool = True, **extra) -> Process:
        name = f"worker-{len(self.processes) + 1}"
        argv = [sys.executable, "-m", "celery", "-A", "workers", "worker", "-Q", "transactional,bulk",
                "--pool", "solo", "--loglevel", "INFO", "-n", f"test-{uuid.uuid4().hex[:12]}@%h"]
        process = self.start(name, argv, self.env(database_url, broker_url, **extra))
        if wait:
            process.wait_for_log(r"@\S+ ready\.")
        return process

    def beat(self, database_url: str, broker_url: str, **extra) -> Process:
        argv = [sys.executable, "-m", "celery", "-A", "workers", "beat", "--loglevel", "INFO"]
        process = self.start(f"beat-{len(self.processes) + 1}", argv, self.env(database_url, broker_url, **extra))
        process.wait_for_log(r"beat: Starting")
        return process

    def close(self) -> None:
        errors = []
        for process in reversed(self.processes):  # first: nothing may write to what goes next
            try:
                process.stop()
            except Exception as exc:  # keep stopping the others
                errors.append(exc)
        for process in self.processes:  # shown by pytest only when the test failed
            print(f"\n===== {process.name} (pid {process.pid}, exit {process.popen.returncode}) "
                  f"{process.log_path} =====\n{process.log()}")
        for fn in reversed(self._cleanups):
            try:
                fn()
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise errors[0]
