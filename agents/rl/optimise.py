"""The clipped multi-epoch optimisation every learner of :mod:`agents.rl` shares.

:func:`optimise` is the loop: epochs of a shuffled batch, cut into optimiser steps, those
into mini-batches, those (over a token budget) into micro-batches, each mini-batch guarded
before its gradients count, then a clipped, guarded optimiser step. Each concern is a named
piece: the token budget (:func:`micro_batches`), the processes' shares and FSDP's weightless
pieces (:mod:`agents.rl.parallel`), gradient save/restore, the guards (:func:`_verdict`).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import torch

from agents.distributed import SINGLE, World, clip_grad_norm, share, sum_gradients

from .batch import TokenBatch
from .config import LearnerConfig
from .parallel import extra_pieces, reduce_stats, weightless_piece

__all__ = [
    "MinibatchLoss",
    "first_minibatch",
    "fits_budget",
    "micro_batches",
    "optimise",
    "skip_optimisation",
]

MinibatchLoss = Callable[[TokenBatch, torch.Tensor], tuple[torch.Tensor, dict[str, torch.Tensor]]]
"""``(sub_batch, idx) -> (loss, stats)``: the loss of the mini-batch ``batch.subset(idx)``
(``idx`` indexes the full batch's rollout tensors) and its detached 0-d stats, which must
include ``policy/ratio`` and ``policy/approxkl``."""

Stats = dict[str, torch.Tensor]


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

    Data-parallel (``world`` of several processes, :mod:`agents.rl.parallel`): every process
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
    lr = float(optimizer.param_groups[0]["lr"])
    loop = _Loop(config, optimizer, batch, minibatch_loss, world)
    epochs, early_stop = 0, False
    for _ in range(config.ppo_epochs):
        perm = torch.randperm(len(batch), generator=generator).to(batch.device)
        epoch_kl = [kl for rows in _optimiser_steps(perm, config) for kl in loop.step(rows)]
        epochs += 1
        target = config.target_kl
        if target is not None and float(torch.stack(epoch_kl).mean()) > 1.5 * target:
            early_stop = True
            break
    _finish(optimizer, lr_scheduler)
    return loop.result(lr, epochs, early_stop)


def skip_optimisation(
    optimizer: torch.optim.Optimizer, lr_scheduler: Any | None = None
) -> dict[str, Any]:
    """:func:`optimise`'s result for an update with no row to learn from: no epoch, no step;
    the learning-rate scheduler still steps, so the schedule keeps counting updates."""
    lr = float(optimizer.param_groups[0]["lr"])
    _finish(optimizer, lr_scheduler)
    return _Loop.summary({}, [], lr, 0, False, 0, 0, 0)


def _finish(optimizer: torch.optim.Optimizer, lr_scheduler: Any | None) -> None:
    optimizer.zero_grad(set_to_none=True)
    if lr_scheduler is not None:
        lr_scheduler.step()


def _optimiser_steps(perm: torch.Tensor, config: LearnerConfig) -> Iterator[torch.Tensor]:
    """The epoch's permutation cut into the rows of each optimiser step."""
    per_step = min(config.mini_batch_size, len(perm)) * config.gradient_accumulation_steps
    for start in range(0, len(perm), per_step):
        yield perm[start : start + per_step]


class _Loop:
    """One call of :func:`optimise`: what its steps share (the parameters) and tally."""

    def __init__(
        self,
        config: LearnerConfig,
        optimizer: torch.optim.Optimizer,
        batch: TokenBatch,
        minibatch_loss: MinibatchLoss,
        world: World,
    ) -> None:
        self.config, self.optimizer, self.batch, self.loss_of, self.world = (
            config,
            optimizer,
            batch,
            minibatch_loss,
            world,
        )
        self.params = [p for group in optimizer.param_groups for p in group["params"]]
        self.mini_batch = min(config.mini_batch_size, len(batch))
        self.stats: dict[str, list[torch.Tensor]] = defaultdict(list)
        self.grad_norms: list[torch.Tensor] = []
        self.refused = {"nonfinite": 0, "skipped": 0}
        """Mini-batches the guards refused (:func:`_verdict`), and non-finite steps."""
        self.steps = 0

    def step(self, step_rows: torch.Tensor) -> list[torch.Tensor]:
        """One optimiser step over ``step_rows``' mini-batches; their approx KLs."""
        self.optimizer.zero_grad(set_to_none=True)
        kls, stepped = [], False
        for start in range(0, len(step_rows), self.mini_batch):
            idx = step_rows[start : start + self.mini_batch]
            stats, counts = self._minibatch(idx, len(step_rows))
            kls.append(stats["policy/approxkl"])
            stepped |= counts
        if stepped:
            self._optimiser_step()
        return kls

    def _minibatch(self, idx: torch.Tensor, step_rows: int) -> tuple[Stats, bool]:
        """Run the mini-batch ``idx`` (this process's share of it), record its stats and
        guard it; whether its gradients count towards the step."""
        budget = self.config.max_tokens_per_microbatch
        local = share(idx, self.world)
        micro = micro_batches(self.batch, local, budget) if len(local) else []
        extra = extra_pieces(len(micro), self.world, budget)
        kept, loss = None, None
        if len(micro) + extra > 1:  # each piece back-propagated now, undone if the guards refuse
            kept = _save_grads(self.params)
            stats = self._pieces(micro, idx, step_rows, extra)
        else:
            loss, stats = self._whole(local, idx)
        for k, v in stats.items():
            self.stats[k].append(v)
        verdict = _verdict(stats, self.config.ratio_threshold)
        if verdict is not None:
            self.refused[verdict] += 1
            _restore_grads(self.params, kept)
            return stats, False
        if loss is not None:
            (loss * (len(local) / step_rows)).backward()
        return stats, True

    def _whole(self, local: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor | None, Stats]:
        """The loss of this process's rows ``local`` of the mini-batch ``idx`` (not yet
        back-propagated) and the mini-batch's stats, ``loss_finite`` included."""
        loss, stats = None, None
        if len(local):
            loss, stats = self.loss_of(self.batch.subset(local), local)
            stats = {**stats, "loss_finite": torch.isfinite(loss.detach()).float()}
        elif self.world.fsdp:  # more processes than rows: this one only joins the collectives
            loss = weightless_piece(self.loss_of, self.batch, idx)
        return loss, reduce_stats(stats, len(local), len(idx), self.world, self.batch.device)

    def _pieces(
        self, micro: list[torch.Tensor], idx: torch.Tensor, step_rows: int, extra: int
    ) -> Stats:
        """Back-propagate each micro-batch's loss weighted by its share of the step's rows (a
        non-finite one is not, except under FSDP, where every process must: the caller then
        puts the gradients back); ``extra`` weightless pieces first. The stats are the
        pieces' row-weighted means over the mini-batch ``idx``."""
        for _ in range(extra):
            (weightless_piece(self.loss_of, self.batch, idx) * 0.0).backward()
        sums: dict[str, torch.Tensor] = {}
        for piece in micro:
            loss, stats = self.loss_of(self.batch.subset(piece), piece)
            finite = torch.isfinite(loss.detach()).float()
            if bool(finite) or self.world.fsdp:
                (loss * (len(piece) / step_rows)).backward()
            for k, v in {**stats, "loss_finite": finite}.items():
                sums[k] = sums.get(k, 0.0) + v.detach().float().reshape(()) * len(piece)
        rows = sum(len(m) for m in micro)
        means = {k: v / rows for k, v in sums.items()} if rows else None
        return reduce_stats(means, rows, len(idx), self.world, self.batch.device)

    def _optimiser_step(self) -> None:
        """Sum the processes' gradients, clip them and step, unless their norm is not finite
        (then they are dropped)."""
        sum_gradients(self.params, self.world)
        max_norm = self.config.max_grad_norm
        norm = clip_grad_norm(self.params, max_norm if max_norm is not None else math.inf).detach()
        if not bool(torch.isfinite(norm)):
            self.refused["nonfinite"] += 1
            self.optimizer.zero_grad(set_to_none=True)
            return
        if max_norm is not None:
            self.grad_norms.append(norm)
        self.optimizer.step()
        self.steps += 1

    def result(self, lr: float, epochs: int, early_stop: bool) -> dict[str, Any]:
        return self.summary(
            self.stats,
            self.grad_norms,
            lr,
            epochs,
            early_stop,
            self.refused["skipped"],
            self.refused["nonfinite"],
            self.steps,
        )

    @staticmethod
    @torch.no_grad()
    def summary(
        stats: dict[str, list[torch.Tensor]],
        grad_norms: list[torch.Tensor],
        lr: float,
        epochs: int,
        early_stop: bool,
        skipped: int,
        nonfinite: int,
        steps: int,
    ) -> dict[str, Any]:
        """:func:`optimise`'s returned dict."""
        return {
            "minibatch": {
                k: float(torch.stack(v).mean()) for k, v in stats.items() if k != "loss_finite"
            },
            "grad_norm": float(torch.stack(grad_norms).mean()) if grad_norms else None,
            "epochs": epochs,
            "early_stop": early_stop,
            "skipped": skipped,
            "nonfinite": nonfinite,
            "steps": steps,
            "learning_rate": lr,
        }


def _verdict(stats: Stats, ratio_threshold: float) -> str | None:
    """The guards on a mini-batch's stats: ``"nonfinite"`` (its loss or ratio is NaN or
    infinite), ``"skipped"`` (its mean ratio is over ``ratio_threshold``) or None (it counts)."""
    ratio = float(stats["policy/ratio"])
    if not (math.isfinite(ratio) and float(stats["loss_finite"]) == 1.0):  # NaN != 1
        return "nonfinite"
    if ratio > ratio_threshold:
        return "skipped"
    return None


def _save_grads(params: list[torch.nn.Parameter]) -> list[torch.Tensor | None]:
    """The gradients as they are, to put back should the guards refuse a mini-batch."""
    return [None if p.grad is None else p.grad.clone() for p in params]


def _restore_grads(
    params: list[torch.nn.Parameter], kept: list[torch.Tensor | None] | None
) -> None:
    """Put back the gradients :func:`_save_grads` kept (None: nothing was back-propagated)."""
    if kept is None:
        return
    for p, g in zip(params, kept):
        p.grad = g


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
    rows, sizes = rows[order], lengths[order].tolist()
    pieces, start, longest = [], 0, 0
    for i, n in enumerate(sizes):
        if i > start and max(longest, n) * (i - start + 1) > budget:
            pieces.append(rows[start:i])
            start, longest = i, 0
        longest = max(longest, n)
    pieces.append(rows[start:])
    return pieces
