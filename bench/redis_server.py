"""A throw-away redis-server for a benchmark: its own process on a free loopback port, with no
persistence, in a temporary directory. The bench may flush it at will; nobody else's data is in it."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

START_TIMEOUT = 20


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class OwnRedis:
    def __init__(self, directory: Path):
        if shutil.which("redis-server") is None:
            raise SystemExit("redis-server is not installed (apt-get install redis-server), or give --broker URL")
        self.directory = directory
        self.host = "127.0.0.1"
        self.port = _free_port(self.host)
        self.url = f"redis://{self.host}:{self.port}/0"
        directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            ["redis-server", "--bind", self.host, "--port", str(self.port), "--dir", str(directory),
             "--save", "", "--appendonly", "no", "--daemonize", "no", "--logfile", str(directory / "redis.log")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        self._wait_until_it_answers()

    @property
    def pid(self) -> int:
        return self.process.pid

    def _client(self):
        import redis

        return redis.Redis(host=self.host, port=self.port)

    def _wait_until_it_answers(self) -> None:
        import redis

        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}: {self.log()}")
            try:
                with self._client() as client:
                    if client.ping():
                        return
            except redis.ConnectionError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not answer within {START_TIMEOUT} s: {self.log()}")
            time.sleep(0.05)

    def flush(self) -> None:
        """Empty it between runs: queues, sent journals and rate buckets of the run before."""
        with self._client() as client:
            client.flushall()

    def log(self) -> str:
        try:
            return (self.directory / "redis.log").read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
