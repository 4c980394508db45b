"""Send-rate token buckets: one in Redis shared by every worker (a Lua script), one per process without it."""

from __future__ import annotations

import threading
import time

import redis

# Refill at `rate` per second up to `rate` tokens (one second of burst). Returns 0 when a token
# was taken, else the milliseconds to wait.
_BUCKET = """
local key, rate, now_ms = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2])
local state = redis.call('HMGET', key, 'tokens', 'at')
local tokens = tonumber(state[1]) or rate
local at = tonumber(state[2]) or now_ms
tokens = math.min(rate, tokens + (now_ms - at) * rate / 1000)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = math.ceil((1 - tokens) * 1000 / rate) end
redis.call('HSET', key, 'tokens', tokens, 'at', now_ms)
redis.call('PEXPIRE', key, 60000)
return wait
"""


class NoLimit:
    def acquire(self) -> None:
        return None


class LocalBucket:
    """Without Redis: the same bucket, per worker process."""

    def __init__(self, rate: float):
        self.rate = rate
        self.tokens = rate
        self.at = time.monotonic()
        self.lock = threading.Lock()

    def acquire(self) -> None:
        while True:
            with self.lock:
                now = time.monotonic()
                self.tokens = min(self.rate, self.tokens + (now - self.at) * self.rate)
                self.at = now
                if self.tokens >= 1:
                    self.tokens -= 1
                    return
                wait = (1 - self.tokens) / self.rate
            time.sleep(wait)


class RedisBucket:
    def __init__(self, url: str, rate: float, key: str = "newsletter:send-rate"):
        self.client = redis.Redis.from_url(url, socket_timeout=5)
        self.script = self.client.register_script(_BUCKET)
        self.rate = rate
        self.key = key

    def acquire(self) -> None:
        while True:
            # Redis' own clock, so workers on several machines share one notion of time.
            seconds, micros = self.client.time()
            wait_ms = int(self.script(keys=[self.key], args=[self.rate, seconds * 1000 + micros // 1000]))
            if wait_ms <= 0:
                return
            time.sleep(wait_ms / 1000)
