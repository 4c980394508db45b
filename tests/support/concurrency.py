"""Real concurrency for race tests: threads released together by a barrier, with bounded waits."""

from __future__ import annotations

import threading
from collections.abc import Callable


def run_at_once(count: int, work: Callable[[int], object], timeout: float = 60) -> list:
    """`work(0) .. work(count - 1)`, each in its own thread, all started at the same moment.

    Returns their results in order; the first exception raised in a thread is raised here.
    """
    barrier = threading.Barrier(count, timeout=timeout)
    results: list = [None] * count
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            barrier.wait()
            results[index] = work(index)
        except BaseException as error:  # handed to the test's thread below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(index,), daemon=True) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    stuck = [thread.name for thread in threads if thread.is_alive()]
    assert not stuck, f"threads still running after {timeout}s: {stuck}"
    if errors:
        raise errors[0]
    return results
