"""A redis-server of the test run's own, on a free loopback port, so that no test ever reads,
writes or flushes the machine's shared Redis. The launcher is the benchmarks' (bench never imports tests)."""

from bench.redis_server import RedisServer

__all__ = ["RedisServer"]
