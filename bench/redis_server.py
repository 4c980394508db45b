"""A throw-away redis-server: its own process on a free loopback port, in a directory of its own, with
no persistence unless append-only is asked for. Benchmarks and the tests start theirs with it (tests may
import bench, bench never imports tests), so nobody's run reads, writes or flushes the machine's Redis."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis

START_TIMEOUT = 20


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class RedisServer:
    def __init__(self, directory: Path, appendonly: bool = False):
        self.directory = directory
        self.appendonly = appendonly
        self.host = "127.0.0.1"
        self.port = _free_port(self.host)
        self.process: subprocess.Popen | None = None

    @staticmethod
    def available() -> bool:
        return shutil.which("redis-server") is not None

    @property
    def pid(self) -> int:
        return self.process.pid

    def url(self, db: int = 0) -> str:
        return f"redis://{self.host}:{self.port}/{db}"

    def client(self, db: int = 0) -> redis.Redis:
        return redis.Redis(host=self.host, port=self.port, db=db)

    def start(self) -> RedisServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        argv = ["redis-server", "--bind", self.host, "--port", str(self.port), "--dir", str(self.directory),
                "--save", "", "--daemonize", "no", "--logfile", str(self.directory / "redis.log")]
        if self.appendonly:
            argv += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            argv += ["--appendonly", "no"]
        self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}: {self.log()}")
            try:
                with self.client() as client:
                    if client.ping():
                        return self
            except redis.ConnectionError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not answer within {START_TIMEOUT}s: {self.log()}")
            time.sleep(0.05)

    def log(self) -> str:
        try:
            return (self.directory / "redis.log").read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"

    def flushall(self) -> None:
        """Empty it: queues, sent journals and rate buckets of the run before."""
        with self.client() as client:
            client.flushall()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def kill9(self) -> None:
        """What a host crash does to it: no shutdown, nothing saved but what append-only already wrote."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def restart(self) -> None:
        """Stop and start again on the same port: an empty server unless append-only is on."""
        self.stop()
        port = self.port
        self.start_on(port)

    def start_on(self, port: int) -> None:
        self.port = port
        self.start()


def own_redis(directory: Path) -> RedisServer:
    """The bench's broker when no --broker is given: started, or the run stops saying what to install."""
    if not RedisServer.available():
        raise SystemExit("redis-server is not installed (apt-get install redis-server), or give --broker URL")
    return RedisServer(directory).start()
