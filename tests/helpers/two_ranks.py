"""Two ranks of a data-parallel world played by two threads of one process."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


def threaded_gather(ranks: int = 2) -> Callable[[Any, Any], list]:
    """A stand-in for :func:`agents.distributed.gather` whose callers (one thread per rank,
    ``w.rank`` their rank) meet at a barrier and each get every rank's object."""
    slots: list = [None] * ranks
    barrier = threading.Barrier(ranks, timeout=30)

    def gather(obj: Any, w: Any) -> list:
        slots[w.rank] = obj
        barrier.wait()
        out = list(slots)
        barrier.wait()
        return out

    return gather


def as_two_ranks(fn: Callable[[int], Any]) -> list:
    """``fn(rank)`` for ranks 0 and 1, each in a thread of its own (so that a
    :func:`threaded_gather` can meet); each rank's result, or the exception it raised."""
    results: list = [None, None]

    def run(rank: int) -> None:
        try:
            results[rank] = fn(rank)
        except Exception as err:  # handed to the test
            results[rank] = err

    threads = [threading.Thread(target=run, args=(r,)) for r in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results
