"""The fused first forward: the rollout pass that doubles as the first optimisation forward.

The first epoch's first mini-batch runs on the policy as it was before the update, so its
forward with grad is also the rollout's: its detached log-probs and values are those rows'
old ones, and the no-grad pass runs the policy on the other rows only (none when one
mini-batch is the whole batch). The same numbers, one mini-batch's policy forward fewer per
update (tested). A mini-batch over the micro-batch token budget: its first micro-batch is
the fused forward.

Where it applies (:func:`fused_rows`): one process, the ``kl`` / ``abs`` / ``mse``
estimators, and, for a mini-batch smaller than the batch or cut by the token budget, a
learner that trains on every row (its first mini-batch is then known before the update).

:func:`fused_pass` runs the opening's passes around that forward and returns a
:class:`PolicyForward`, the per-update object the losses call for the policy's output.
"""

from __future__ import annotations

from typing import Any

import torch

from .batch import TokenBatch
from .config import LearnerConfig
from .maths import zero_pad
from .optimise import first_minibatch, fits_budget, micro_batches
from .passes import Passes, rollout_pass

__all__ = ["PolicyForward", "fused_pass", "fused_rows"]


def fused_rows(
    config: LearnerConfig, generator: torch.Generator, batch: TokenBatch, every_row: bool
) -> torch.Tensor | None:
    """The rows of ``batch`` whose forward with grad gives the old log-probs and values: the
    first mini-batch's (its first micro-batch's where the token budget cuts it), read from
    ``generator`` without advancing it; None where fusing does not apply. ``every_row``:
    the learner trains on every row (its mini-batches are known before the update)."""
    cfg, n = config, len(batch)
    if cfg.ppo_epochs < 1 or cfg.kl_penalty == "full":
        return None
    if every_row:
        rows = first_minibatch(cfg, generator, n)
    elif cfg.mini_batch_size >= n:
        rows = torch.arange(n)
    else:
        return None
    rows, budget = rows.to(batch.device), cfg.max_tokens_per_microbatch
    if fits_budget(batch, rows, budget):
        return rows
    return micro_batches(batch, rows, budget)[0] if every_row else None  # its first piece


class PolicyForward:
    """The policy's forward with grad for one update's losses. The first call takes its rows
    from the fused forward ``kept`` (``(rows, output)``) when they are among that forward's;
    any other call, or a first one on other rows, runs ``agent.forward``."""

    def __init__(self, agent: Any, kept: tuple[torch.Tensor, Any] | None = None) -> None:
        self.agent = agent
        self.kept = kept

    def __call__(self, sub: TokenBatch, idx: torch.Tensor) -> Any:
        kept, self.kept = self.kept, None
        if kept is None:
            return self.agent.forward(sub)
        rows, out = kept
        same = idx.unsqueeze(1) == rows.unsqueeze(0)  # (len(idx), len(rows))
        if not bool(same.any(1).all()):
            return self.agent.forward(sub)
        at, t = same.int().argmax(1), sub.response_ids.shape[1]
        pick = lambda x: None if x is None else x[at, :t]  # noqa: E731
        return type(out)(pick(out.logprobs), pick(out.values), pick(out.entropy))

    def release(self) -> None:
        """Drop the fused forward's graph should no loss have used it."""
        self.kept = None


def fused_pass(
    agent: Any,
    batch: TokenBatch,
    rows: torch.Tensor,
    chunk: int,
    estimator: str,
    with_values: bool,
    with_reference: bool,
) -> tuple[Passes, PolicyForward]:
    """The opening's passes with ``rows``' forward fused: the reference's pass alone, then
    the policy's no-grad pass on the other rows, then ``rows``' forward with grad, whose
    detached outputs are their old log-probs and values (the other passes' activations and
    the fused graph are never held at once)."""
    _, _, ref_lp, kls = rollout_pass(
        agent, batch, chunk, estimator, with_values, with_reference, with_policy=False
    )
    old_lp = torch.zeros(batch.response_ids.shape, device=batch.device)
    values = torch.zeros_like(old_lp) if with_values else None
    rest = torch.ones(len(batch), dtype=torch.bool, device=batch.device)
    rest[rows] = False
    rest = rest.nonzero().flatten()
    if len(rest):  # the other rows' old log-probs and values: the no-grad pass
        lp, v, _, _ = rollout_pass(
            agent, batch.subset(rest), chunk, estimator, with_values, with_reference=False
        )
        old_lp[rest, : lp.shape[1]] = lp
        if values is not None:
            assert v is not None  # the pass gives values where the learner has a critic
            values[rest, : v.shape[1]] = v
    out = agent.forward(batch.subset(rows))  # with grad: the first loss reuses it
    t = out.logprobs.shape[1]
    old_lp[rows, :t] = out.logprobs.detach().float()
    if values is not None:
        values[rows, :t] = out.values.detach().float()
    mask = batch.response_mask
    passes = (
        zero_pad(old_lp, mask),
        (zero_pad(values, mask) if values is not None else None),
        ref_lp,
        kls,
    )
    return passes, PolicyForward(agent, (rows, out))
