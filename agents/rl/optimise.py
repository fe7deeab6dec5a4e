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

from agents.distributed import SINGLE, World, gather, reduce_sum, sum_gradients

from .batch import TokenBatch
from .config import PPOConfig

__all__ = ["MinibatchLoss", "optimise"]

MinibatchLoss = Callable[[TokenBatch, torch.Tensor], tuple[torch.Tensor, dict[str, torch.Tensor]]]
"""``(sub_batch, idx) -> (loss, stats)``: the loss of the mini-batch ``batch.subset(idx)``
(``idx`` indexes the full batch's rollout tensors) and its detached 0-d stats, which must
include ``policy/ratio`` and ``policy/approxkl``."""


def optimise(
    config: PPOConfig,
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
                local = _share(idx, world)
                loss, stats = _minibatch(minibatch_loss, batch, local, len(idx), world)
                for k, v in stats.items():
                    mb_stats[k].append(v)
                epoch_kl.append(stats["policy/approxkl"])
                ratio = float(stats["policy/ratio"])
                if not (math.isfinite(ratio) and bool(torch.isfinite(stats["loss_finite"]))
                        and float(stats["loss_finite"]) == 1.0):
                    nonfinite += 1
                    continue
                if ratio > cfg.ratio_threshold:
                    skipped += 1
                    continue
                if loss is not None:
                    (loss * (len(local) / len(b_idx))).backward()
                stepped = True
            if stepped:
                sum_gradients(params, world)
                max_norm = cfg.max_grad_norm if cfg.max_grad_norm is not None else math.inf
                norm = torch.nn.utils.clip_grad_norm_(params, max_norm).detach()
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


def _share(idx: torch.Tensor, world: World) -> torch.Tensor:
    """This process's contiguous share of a mini-batch's rows (all of them alone)."""
    if not world.parallel:
        return idx
    bounds = [len(idx) * r // world.size for r in range(world.size + 1)]
    return idx[bounds[world.rank] : bounds[world.rank + 1]]


def _minibatch(minibatch_loss: MinibatchLoss, batch: TokenBatch, local: torch.Tensor, total: int,
               world: World) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
    """The loss of this process's rows and the mini-batch's stats (with ``loss_finite``:
    1 when every process's loss is finite); across processes, each stat is the mean of
    the shares' stats weighted by their rows."""
    if len(local):
        loss, stats = minibatch_loss(batch.subset(local), local)
        stats = {**stats, "loss_finite": torch.isfinite(loss.detach()).float()}
    else:  # more processes than rows: this one only joins the collectives
        loss, stats = None, None
    if not world.parallel:
        return loss, stats
    if total >= world.size:  # every process has rows, hence the same stats
        names = sorted(stats)
    else:
        names = next(n for n in gather(sorted(stats) if stats is not None else None, world) if n)
    values = (torch.stack([stats[k].detach().float().reshape(()) for k in names]) * len(local)
              if stats is not None else torch.zeros(len(names)))
    finite = torch.isfinite(values)
    values = reduce_sum(torch.where(finite, values, torch.zeros_like(values)).to(batch.device), world) / total
    bad = reduce_sum((~finite).float().to(batch.device), world)
    values = torch.where(bad > 0, torch.full_like(values, math.nan), values)
    return loss, dict(zip(names, values.cpu()))

