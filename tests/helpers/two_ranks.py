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
