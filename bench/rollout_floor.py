"""The floor of a rollout: the larger of its forwards' FLOPs at the matmul peak and its
weight reads at the memory bandwidth, both measured in the same process.

:func:`counting` counts what the KV-cache sampler computes while installed: the positions
each forward's body computes (the prefill: every left-padded prompt position; a decode
step: one per row), the rows the output head projects, and the forwards (each reads every
weight once). FLOPs are ``2 * (P * positions + H * head rows)`` as in :mod:`bench.update`;
weight bytes are ``(P + H) * bytes per weight`` per forward.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch

__all__ = ["RolloutCount", "counting", "floor_s", "memory_bandwidth"]


@dataclass
class RolloutCount:
    """What the sampler computed since the last :meth:`reset`."""

    positions: int = 0
    head_rows: int = 0
    forwards: int = 0

    def reset(self) -> None:
        self.positions = self.head_rows = self.forwards = 0


@contextlib.contextmanager
def counting() -> Iterator[RolloutCount]:
    """A :class:`RolloutCount` of every :class:`agents.policy.sampler.KVCacheSampler`
    forward in the block."""
    from agents.policy.sampler import KVCacheSampler

    count = RolloutCount()
    init, advance = KVCacheSampler.__init__, KVCacheSampler.advance

    def counted_init(self, agent, model, prompts, budget):
        init(self, agent, model, prompts, budget)
        b = len(prompts)
        count.positions += b * self.p_len
        count.head_rows += b if agent.keeps_logits else b * self.p_len
        count.forwards += 1

    def counted_advance(self, tokens):
        advance(self, tokens)
        count.positions += len(tokens)
        count.head_rows += len(tokens)
        count.forwards += 1

    KVCacheSampler.__init__, KVCacheSampler.advance = counted_init, counted_advance
    try:
        yield count
    finally:
        KVCacheSampler.__init__, KVCacheSampler.advance = init, advance


def memory_bandwidth(mib: int = 512, repeats: int = 5) -> float:
    """Bytes/s of reading a ``mib`` MiB fp32 tensor once (a sum), the best of ``repeats``."""
    x = torch.ones(mib * 2**18)
    x.sum()
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        x.sum()
        best = min(best, time.perf_counter() - t0)
    return x.numel() * x.element_size() / best


def floor_s(
    count: RolloutCount,
    params: tuple[int, int],
    weight_bytes: int,
    peak: float,
    bandwidth: float,
    iterations: int = 1,
) -> dict[str, float]:
    """Per iteration: the rollout's FLOPs, weight bytes read, their times at ``peak`` FLOP/s
    and ``bandwidth`` bytes/s, and the floor (the larger), for a model of ``params`` =
    ``(body, head)`` weights of ``weight_bytes`` bytes each."""
    body, head = params
    flops = 2 * (body * count.positions + head * count.head_rows) / iterations
    read = (body + head) * weight_bytes * count.forwards / iterations
    return {
        "rollout_flops": flops,
        "rollout_weight_bytes": read,
        "rollout_forwards": count.forwards / iterations,
        "rollout_flops_s": flops / peak,
        "rollout_reads_s": read / bandwidth,
        "rollout_floor_s": max(flops / peak, read / bandwidth),
        "memory_bandwidth": bandwidth,
    }
