"""Data parallelism and FSDP inside an update: what the learners' processes share.

Every process of a data-parallel run (:class:`agents.distributed.World`) holds the whole
batch. The no-grad pass is split into contiguous shares and gathered (:func:`sharded_pass`);
each mini-batch's rows are split the same way (:func:`agents.distributed.share`), each
process back-propagates its share, and the mini-batch's stats are the row-weighted means
over every share (:func:`reduce_stats`), so the guards and early stopping agree everywhere.
With FSDP every forward and backward is a collective: a process with fewer pieces than
another runs weightless ones (:func:`extra_pieces`, :func:`weightless_piece`).
On one process each of these is the identity or does nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from agents.distributed import World, gather, gather_rows, reduce_sum, share

from .batch import TokenBatch
from .passes import Passes, rollout_pass

__all__ = ["extra_pieces", "reduce_stats", "sharded_pass", "weightless_piece"]


def sharded_pass(agent: Any, batch: TokenBatch, world: World, *args: Any) -> Passes:
    """:func:`agents.rl.passes.rollout_pass` (``args`` after the batch), each process on its
    contiguous share of the rows, gathered; the whole batch on every process where the rows
    do not divide evenly (or on one process)."""
    if not world.parallel or len(batch) % world.size:
        return rollout_pass(agent, batch, *args)
    local = batch.subset(share(torch.arange(len(batch), device=batch.device), world))
    t_len = batch.response_ids.shape[1]
    parts = rollout_pass(agent, local, *args)
    old_lp, *rest = (
        None if x is None else gather_rows(F.pad(x, (0, t_len - x.shape[1])), world) for x in parts
    )
    assert old_lp is not None
    values, ref_lp, kls = rest
    return old_lp, values, ref_lp, kls


def extra_pieces(pieces: int, world: World, budget: int | None) -> int:
    """How many pieces this process runs beyond its own ``pieces``: with FSDP every forward
    and backward is a collective, so each process runs as many as the one with the most
    (0 otherwise, and without a token budget: one piece each)."""
    if not world.fsdp or budget is None:
        return 0
    return max(gather(pieces, world)) - pieces


def weightless_piece(loss_of: Callable, batch: TokenBatch, idx: torch.Tensor) -> torch.Tensor:
    """The loss of the mini-batch ``idx``'s first row, for a sharded process that has no
    rows of its own: it joins FSDP's collectives and, back-propagated with weight 0, adds
    nothing."""
    loss, _ = loss_of(batch.subset(idx[:1]), idx[:1])
    return loss


def reduce_stats(
    stats: dict[str, torch.Tensor] | None, rows: int, total: int, world: World, device: torch.device
) -> dict[str, torch.Tensor]:
    """Each stat's mean over the mini-batch's ``total`` rows from every process's mean over
    its ``rows`` (``stats`` None: this process has none); NaN where any process's is not
    finite. On one process: ``stats`` as they are."""
    if not world.parallel:
        assert stats is not None, "one process always holds the mini-batch's rows"
        return stats
    names = _stat_names(stats, total, world)
    values = (
        torch.stack([stats[k].detach().float().reshape(()) for k in names]) * rows
        if stats is not None
        else torch.zeros(len(names))
    )
    finite = torch.isfinite(values)
    kept = torch.where(finite, values, torch.zeros_like(values)).to(device)
    values = reduce_sum(kept, world) / total
    bad = reduce_sum((~finite).float().to(device), world)
    values = torch.where(bad > 0, torch.full_like(values, math.nan), values)
    return dict(zip(names, values.cpu()))


def _stat_names(stats: dict[str, torch.Tensor] | None, total: int, world: World) -> list[str]:
    """The stats' names, from a process that has them (one without rows of the mini-batch's
    ``total`` has none)."""
    if total >= world.size:  # every process has rows, hence the same stats
        assert stats is not None
        return sorted(stats)
    return next(n for n in gather(sorted(stats) if stats is not None else None, world) if n)
