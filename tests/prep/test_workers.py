"""The crash-safe process pool (kept free of heavy imports: spawned workers import this module)."""

import os

from cgnl_video.prep.workers import WorkerCrash, parallel_map


def _die_on_three(item: int) -> int:
    if item == 3:
        os._exit(7)  # a decoder crash takes the whole worker down
    if item == 4:
        raise ValueError("bad item")
    return item * 10


def test_worker_crash_costs_one_item():
    results = dict(parallel_map(_die_on_three, [1, 2, 3, 4, 5, 6], workers=2))
    assert {k: v for k, v in results.items() if not isinstance(v, WorkerCrash)} == {1: 10, 2: 20, 5: 50, 6: 60}
    assert "exit code 7" in results[3].reason and "bad item" in results[4].reason
