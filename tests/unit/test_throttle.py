"""The send-rate bucket (in Redis, shared by all workers) and the adaptive throttle."""

import pytest

from newsletter.infra.rate_bucket import RedisBucket
from newsletter.services.delivery.throttle import AdaptiveThrottle


@pytest.mark.redis
def test_redis_bucket_hands_out_its_burst_then_asks_to_wait(redis_server):
    bucket = RedisBucket(redis_server.url(1), rate=1, key="test:send-rate")
    bucket.client.delete("test:send-rate")
    try:
        seconds, micros = bucket.client.time()
        now_ms = seconds * 1000 + micros // 1000
        first = int(bucket.script(keys=[bucket.key], args=[1, now_ms]))
        second = int(bucket.script(keys=[bucket.key], args=[1, now_ms]))  # same instant: the bucket is empty
        later = int(bucket.script(keys=[bucket.key], args=[1, now_ms + 1000]))  # a second on: one token again
    finally:
        bucket.client.delete("test:send-rate")
    assert (first, later) == (0, 0)
    assert 900 <= second <= 1000


def test_throttle_slows_down_on_421_and_repeated_4xx_and_recovers():
    throttle = AdaptiveThrottle(streak_limit=3, first_pause=0.5, max_pause=4)
    throttle.temporary_failure("451 4.7.1 later")
    throttle.temporary_failure("451 4.7.1 later")
    assert throttle.pause == 0  # two in a row: still a coincidence
    throttle.temporary_failure("451 4.7.1 later")
    assert throttle.pause == 0.5
    throttle.temporary_failure("421 4.7.0 too fast")
    assert throttle.pause == 1.0
    for _ in range(5):
        throttle.temporary_failure("421 slow down")
    assert throttle.pause == 4  # capped
    throttle.success()
    assert throttle.pause == 2 and throttle.streak == 0
    for _ in range(10):
        throttle.success()
    assert throttle.pause == 0
