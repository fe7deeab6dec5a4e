"""The no-grad pass of an update's opening, and :class:`Rollout`, what the opening computed.

:func:`rollout_pass` scores a batch without grad: the rollout policy's log-probs and values
and the reference's log-probs (and, for the ``full`` estimator, the per-token KLs), a chunk
of rows at a time. The skeleton (:mod:`agents.rl.base`) runs it whole, shared across the
processes of a data-parallel run (:mod:`agents.rl.parallel`), or around the fused first
forward (:mod:`agents.rl.fused`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from .batch import TokenBatch
from .maths import kl_penalty, logprobs_from_logits, zero_pad

__all__ = ["Passes", "Rollout", "rollout_pass"]

Passes = tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]
"""``(old log-probs, values, ref log-probs, full KLs)``, each ``(N, T)`` float32 or None."""


@torch.no_grad()
def rollout_pass(
    agent: Any,
    batch: TokenBatch,
    chunk: int,
    estimator: str,
    with_values: bool = True,
    with_reference: bool = True,
    with_policy: bool = True,
) -> Passes:
    """Old log-probs, values (None unless ``with_values``), ref log-probs (None unless
    ``with_reference``: then the reference never runs) and (for the ``full`` estimator, else
    None) per-token KLs of ``batch``, ``chunk`` rows at a time; each ``(N, T)`` float32, zero
    on padding. ``with_policy`` False: the reference alone (old log-probs and values zero)."""
    n, t_len = batch.response_ids.shape
    full = estimator == "full" and with_reference
    old_lp, values, ref_lp, kls = (torch.zeros(n, t_len, device=batch.device) for _ in range(4))
    for start in range(0, n, chunk):
        idx = torch.arange(start, min(start + chunk, n), device=batch.device)
        sub = batch.subset(idx)
        t = sub.response_ids.shape[1]
        if with_policy:
            out = agent.forward(sub, with_logits=full)
            old_lp[idx, :t] = out.logprobs.detach().float()
            if with_values:
                values[idx, :t] = out.values.detach().float()
        if not with_reference:
            continue
        ref = agent.ref_logprobs(sub, full=full)
        if full:
            if out.logits is None:
                raise ValueError(
                    "the 'full' KL estimator needs agent.forward(with_logits=True) logits"
                )
            full_ref = ref.float()
            kls[idx, :t] = kl_penalty(F.log_softmax(out.logits.float(), dim=-1), full_ref, "full")
            ref = logprobs_from_logits(full_ref, sub.response_ids)  # already normalised
        ref_lp[idx, :t] = ref.float()
    mask = batch.response_mask
    old_lp, values, ref_lp, kls = (zero_pad(x, mask) for x in (old_lp, values, ref_lp, kls))
    return (
        old_lp,
        (values if with_values else None),
        (ref_lp if with_reference else None),
        (kls if full else None),
    )


@dataclass
class Rollout:
    """What the shared opening of one update computed; per-token tensors are ``(N, T)``,
    float32, zero on padding. It lives for that update only."""

    mask: torch.Tensor
    raw_scores: torch.Tensor
    """``(N,)`` the scores as given."""
    scores: torch.Tensor
    """``(N,)`` after score scaling / normalisation / clipping."""
    old_logprobs: torch.Tensor
    values: torch.Tensor | None
    """The rollout policy's values (None for a learner without a critic)."""
    ref_logprobs: torch.Tensor | None
    """None when the learner runs no reference (``uses_reference`` False)."""
    rewards: torch.Tensor
    """``-kl_coef * KL_t``, plus the score at each response's last token."""
    non_score_rewards: torch.Tensor
    kls: torch.Tensor | None
    """The per-token KL estimate (``kl_penalty``); None without a reference."""
    kl_coef: float
    """The coefficient in ``rewards`` (0 when the KL is not in the reward)."""
    policy: Any = None
    """The policy's forward with grad for the losses (:class:`agents.rl.fused.PolicyForward`)."""
    truncated: torch.Tensor | None = None
    """``(N,)`` bool: the answers the env cut at its token limit (None: not given)."""

    def forward(self, sub: TokenBatch, idx: torch.Tensor) -> Any:
        """The policy's output on the mini-batch ``sub`` (rows ``idx`` of the batch), with
        grad: a learner's ``loss`` calls this (the update's first call may reuse the fused
        first forward, :mod:`agents.rl.fused`)."""
        return self.policy(sub, idx)
