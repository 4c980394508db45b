"""The suite starts its own redis-server: the machine's shared Redis on 6379 keeps every key it had."""

import pytest

from .support import shared_redis
from .support.services import require


def test_the_machines_redis_keeps_every_key_planted_before_the_run(request):
    require("the shared Redis", shared_redis.available(), f"{shared_redis.SHARED_HOST}:{shared_redis.SHARED_PORT}")
    if not getattr(request.config, "_planted_shared_redis", False):
        pytest.fail("the keys were not planted at the start of the run", pytrace=False)
    assert shared_redis.missing() == []
