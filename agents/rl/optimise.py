"""The clipped multi-epoch optimisation every learner of :mod:`agents.rl` shares.

:func:`optimise` runs ``ppo_epochs`` passes of shuffled mini-batches over a batch, calling a
learner-supplied ``minibatch_loss`` for each, with gradient accumulation, the ratio guard,
gradient clipping, early stopping on a target KL and one learning-rate scheduler step.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch

from agents.distributed import (
    SINGLE,
    World,
    clip_grad_norm,
    gather,
    reduce_sum,
    share,
    sum_gradients,
)

from .batch import TokenBatch
from .config import LearnerConfig

__all__ = ["MinibatchLoss", "first_minibatch", "fits_budget", "micro_batches", "optimise"]

MinibatchLoss = Callable[[TokenBatch, torch.Tensor], tuple[torch.Tensor, dict[str, torch.Tensor]]]
"""``(sub_batch, idx) -> (loss, stats)``: the loss of the mini-batch ``batch.subset(idx)``
(``idx`` indexes the full batch's rollout tensors) and its detached 0-d stats, which must
include ``policy/ratio`` and ``policy/approxkl``."""


def optimise(
    config: LearnerConfig,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    batch: TokenBatch,
    minibatch_loss: MinibatchLoss,
    lr_scheduler: Any | None = None,
    world: World = SINGLE,
) -> dict[str, Any]:
    """Optimise ``minibatch_loss`` over ``batch``.

    For each of ``config.ppo_epochs`` epochs: a permutation drawn from ``generator``, cut
    into optimiser steps of ``mini_batch_size * gradient_accumulation_steps`` trajectories
    and those into mini-batches; a mini-batch whose mean ratio exceeds ``ratio_threshold``
    is skipped (no backward; counted, not warned about), the others' losses are
    back-propagated scaled by their share of the step; then the optimiser's parameters are
    clipped to ``max_grad_norm`` and it steps. Stops after the epoch whose mean approx KL
    exceeds ``1.5 * target_kl``; steps ``lr_scheduler`` once at the end.

    Non-finite guards: a mini-batch whose loss or ratio is NaN or infinite gets no backward,
    and an optimiser step whose gradient norm is not finite is not taken (its gradients are
    dropped): the weights and the optimiser state stay as they were. Both are counted in
    ``nonfinite``; ``steps`` counts the optimiser steps taken.

    Data-parallel (``world`` of several processes, :mod:`agents.distributed`): every process
    holds the whole batch and draws the same permutation; each mini-batch's rows are split
    into contiguous shares, one per process, each back-propagating its share's loss weighted
    by the share's size; the gradients are summed across processes before clipping, and the
    stats (hence the ratio guard, the non-finite guard and early stopping) are the
    row-weighted means over the whole mini-batch: every process takes the same steps.

    ``max_tokens_per_microbatch``: a mini-batch over that many padded tokens is cut into
    micro-batches (:func:`micro_batches`) back-propagated one by one, each weighted by its
    rows' share of the step; its stats are the pieces' row-weighted means, and the gradients
    of a mini-batch the guards then skip are put back as they were.

    Returns ``minibatch`` (each stat's mean over all mini-batches, skipped ones included, in
    first-seen order), ``grad_norm`` (mean clipped norm of the steps taken, or None),
    ``epochs``, ``early_stop``, ``skipped`` (mini-batches over the ratio threshold),
    ``nonfinite``, ``steps`` and ``learning_rate`` (before the update).
    """
    cfg = config
    n, device = len(batch), batch.device
    params = [p for group in optimizer.param_groups for p in group["params"]]
    lr = float(optimizer.param_groups[0]["lr"])
    mb = min(cfg.mini_batch_size, n)
    backward_bs = mb * cfg.gradient_accumulation_steps
    mb_stats: dict[str, list[torch.Tensor]] = defaultdict(list)
    grad_norms: list[torch.Tensor] = []
    epochs, early_stop, skipped, nonfinite, steps = 0, False, 0, 0, 0
    for _ in range(cfg.ppo_epochs):
        perm = torch.randperm(n, generator=generator).to(device)
        epoch_kl: list[torch.Tensor] = []
        for b_start in range(0, n, backward_bs):
            b_idx = perm[b_start : b_start + backward_bs]
            optimizer.zero_grad(set_to_none=True)
            stepped = False
            for m_start in range(0, len(b_idx), mb):
                idx = b_idx[m_start : m_start + mb]
                local = share(idx, world)
                micro = micro_batches(batch, local, cfg.max_tokens_per_microbatch) if len(local) else []
                extra = _extra_pieces(len(micro), world, cfg.max_tokens_per_microbatch)
                kept = None
                if len(micro) + extra > 1:  # each piece back-propagated now, undone if the mini-batch is skipped
                    kept = [None if p.grad is None else p.grad.clone() for p in params]
                    loss, stats = None, _pieces(minibatch_loss, batch, micro, len(b_idx), idx, world, extra)
                else:
                    loss, stats = _minibatch(minibatch_loss, batch, local, idx, world)
                for k, v in stats.items():
                    mb_stats[k].append(v)
                epoch_kl.append(stats["policy/approxkl"])
                ratio = float(stats["policy/ratio"])
                if not (math.isfinite(ratio) and float(stats["loss_finite"]) == 1.0):  # NaN != 1
                    nonfinite += 1
                    _restore(params, kept)
                    continue
                if ratio > cfg.ratio_threshold:
                    skipped += 1
                    _restore(params, kept)
                    continue
                if loss is not None:
                    (loss * (len(local) / len(b_idx))).backward()
                stepped = True
            if stepped:
                sum_gradients(params, world)
                max_norm = cfg.max_grad_norm if cfg.max_grad_norm is not None else math.inf
                norm = clip_grad_norm(params, max_norm).detach()
                if not bool(torch.isfinite(norm)):
                    nonfinite += 1
                    optimizer.zero_grad(set_to_none=True)
                    continue
                if cfg.max_grad_norm is not None:
                    grad_norms.append(norm)
                optimizer.step()
                steps += 1
        epochs += 1
        if cfg.target_kl is not None and float(torch.stack(epoch_kl).mean()) > 1.5 * cfg.target_kl:
            early_stop = True
            break
    optimizer.zero_grad(set_to_none=True)
    if lr_scheduler is not None:
        lr_scheduler.step()
    with torch.no_grad():
        return {
            "minibatch": {k: float(torch.stack(v).mean()) for k, v in mb_stats.items()
                          if k != "loss_finite"},
            "grad_norm": float(torch.stack(grad_norms).mean()) if grad_norms else None,
            "epochs": epochs,
            "early_stop": early_stop,
            "skipped": skipped,
            "nonfinite": nonfinite,
            "steps": steps,
            "learning_rate": lr,
        }


def _minibatch(minibatch_loss: MinibatchLoss, batch: TokenBatch, local: torch.Tensor, idx: torch.Tensor,
               world: World) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
    """The loss of this process's rows ``local`` of the mini-batch ``idx`` and the
    mini-batch's stats (with ``loss_finite``: 1 when every process's loss is finite); across
    processes, each stat is the mean of the shares' stats weighted by their rows."""
    total = len(idx)
    if len(local):
        loss, stats = minibatch_loss(batch.subset(local), local)
        stats = {**stats, "loss_finite": torch.isfinite(loss.detach()).float()}
    else:  # more processes than rows: this one only joins the collectives
        loss, stats = None, None
        if world.fsdp:  # sharded, they include the forward and backward: a weightless one (0 rows)
            loss, _ = minibatch_loss(batch.subset(idx[:1]), idx[:1])
    if not world.parallel:
        return loss, stats
    return loss, _reduce_stats(stats, _stat_names(stats, total, world), len(local), total, world, batch.device)


def _stat_names(stats: dict[str, torch.Tensor] | None, total: int, world: World) -> list[str]:
    """The stats' names, from a process that has them (one without rows of the mini-batch's
    ``total`` has none)."""
    if total >= world.size:  # every process has rows, hence the same stats
        return sorted(stats)
    return next(n for n in gather(sorted(stats) if stats is not None else None, world) if n)


def first_minibatch(config: LearnerConfig, generator: torch.Generator, n: int) -> torch.Tensor:
    """The rows of a batch of ``n`` that :func:`optimise` puts in its first mini-batch (of the
    first epoch: on the policy as it was before the update), read from ``generator``
    without advancing it."""
    state = generator.get_state()
    perm = torch.randperm(n, generator=generator)
    generator.set_state(state)
    return perm[: min(config.mini_batch_size, n)]


def fits_budget(batch: TokenBatch, rows: torch.Tensor, budget: int | None) -> bool:
    """Whether ``rows`` of ``batch`` fit one micro-batch of ``budget`` padded tokens (their
    count x their longest sequence; None: no budget)."""
    return budget is None or len(rows) * int(batch.attention_mask[rows].sum(1).max()) <= budget


def micro_batches(batch: TokenBatch, rows: torch.Tensor, budget: int | None) -> list[torch.Tensor]:
    """``rows`` cut into runs of at most ``budget`` padded tokens (a run's rows x its longest
    sequence), longest sequences first so that each run's rows are of similar length; a row
    longer than the budget is a run of its own; ``[rows]`` when they fit in one."""
    if len(rows) == 0 or fits_budget(batch, rows, budget):
        return [rows]
    lengths = batch.attention_mask[rows].sum(1)
    order = torch.sort(lengths, descending=True, stable=True).indices
    rows, lengths = rows[order], lengths[order].tolist()
    pieces, start, longest = [], 0, 0
    for i, n in enumerate(lengths):
        if i > start and max(longest, n) * (i - start + 1) > budget:
            pieces.append(rows[start:i])
            start, longest = i, 0
        longest = max(longest, n)
    pieces.append(rows[start:])
    return pieces


def _extra_pieces(pieces: int, world: World, budget: int | None) -> int:
    """How many pieces this process runs beyond its own ``pieces``: with FSDP every forward
    and backward is a collective, so each process runs as many as the one with the most
    (0 otherwise, and without a token budget: one piece each)."""
    if not world.fsdp or budget is None:
        return 0
    return max(gather(pieces, world)) - pieces


def _pieces(minibatch_loss: MinibatchLoss, batch: TokenBatch, micro: list[torch.Tensor], step_rows: int,
            idx: torch.Tensor, world: World, extra: int = 0) -> dict[str, torch.Tensor]:
    """Back-propagate each micro-batch's loss weighted by its share of the step's rows
    (a non-finite one is not, except under FSDP, where every process must: the mini-batch's
    gradients are then put back by the caller); the stats are the pieces' row-weighted means
    over the mini-batch ``idx`` (across processes too). ``extra`` pieces more
    (:func:`_extra_pieces`) run the mini-batch's first row with weight 0: they join the
    sharded collectives and add nothing."""
    sums: dict[str, torch.Tensor] = {}
    rows, total = sum(len(m) for m in micro), len(idx)
    for _ in range(extra):
        loss, _ = minibatch_loss(batch.subset(idx[:1]), idx[:1])
        (loss * 0.0).backward()
    for piece in micro:
        loss, stats = minibatch_loss(batch.subset(piece), piece)
        finite = torch.isfinite(loss.detach()).float()
        if bool(finite) or world.fsdp:
            (loss * (len(piece) / step_rows)).backward()
        for k, v in {**stats, "loss_finite": finite}.items():
            sums[k] = sums.get(k, 0.0) + v.detach().float().reshape(()) * len(piece)
    stats = {k: v / rows for k, v in sums.items()} if rows else None
    if not world.parallel:
        return stats
    return _reduce_stats(stats, _stat_names(stats, total, world), rows, total, world, batch.device)


def _reduce_stats(stats: dict[str, torch.Tensor] | None, names: list[str], rows: int, total: int,
                  world: World, device: torch.device) -> dict[str, torch.Tensor]:
    """Each stat's mean over the mini-batch's ``total`` rows from every process's mean over
    its ``rows``; NaN where any process's is not finite."""
    values = (torch.stack([stats[k].detach().float().reshape(()) for k in names]) * rows
              if stats is not None else torch.zeros(len(names)))
    finite = torch.isfinite(values)
    values = reduce_sum(torch.where(finite, values, torch.zeros_like(values)).to(device), world) / total
    bad = reduce_sum((~finite).float().to(device), world)
    values = torch.where(bad > 0, torch.full_like(values, math.nan), values)
    return dict(zip(names, values.cpu()))


def _restore(params: list[torch.nn.Parameter], kept: list[torch.Tensor | None] | None) -> None:
    """Put back the gradients saved before a mini-batch whose pieces were back-propagated."""
    if kept is None:
        return
    for p, g in zip(params, kept):
        p.grad = g
