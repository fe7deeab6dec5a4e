"""PPO's losses: the clipped surrogate and the clipped value loss, with their statistics.

``(N, T)`` response-aligned tensors and a float ``mask``, as in :mod:`agents.rl.maths`;
``loss = pg_loss + vf_coef * vf_loss`` is the learner's business.
"""

from __future__ import annotations

import torch

from .maths import masked_mean, zero_pad

__all__ = ["policy_loss", "value_loss"]


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    cliprange: float,
    entropy: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO's clipped surrogate: ``mean(max(-A * ratio, -A * clip(ratio, 1-c, 1+c)))``.

    Stats (detached 0-d tensors): ``clipfrac`` (fraction of tokens where the clipped term is
    the larger), ``approxkl`` (``0.5 * mean((logp - old)^2)``), ``policykl``
    (``mean(old - logp)``), ``ratio`` (mean ratio), ``advantages_mean`` and, when
    ``entropy`` ``(N, T)`` is given, ``entropy``.
    """
    log_ratio = zero_pad(logprobs - old_logprobs, mask)  # before exp: no inf/NaN from padding
    advantages = zero_pad(advantages, mask)
    ratio = torch.exp(log_ratio)
    pg_losses = -advantages * ratio
    pg_losses2 = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    loss = masked_mean(torch.max(pg_losses, pg_losses2), mask)
    with torch.no_grad():
        stats = {
            "clipfrac": masked_mean((pg_losses2 > pg_losses).to(ratio.dtype), mask),
            "approxkl": 0.5 * masked_mean(log_ratio.square(), mask),
            "policykl": masked_mean(-log_ratio, mask),
            "ratio": masked_mean(ratio, mask),
            "advantages_mean": masked_mean(advantages, mask),
        }
        if entropy is not None:
            stats["entropy"] = masked_mean(entropy.detach(), mask)
    return loss, stats


def value_loss(
    vpreds: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    cliprange_value: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped value loss ``0.5 * mean(max((v - R)^2, (clip(v, old +- c) - R)^2))``.

    Stats (detached): ``clipfrac``, ``vpred`` (mean prediction), ``error`` (mean squared
    error of the unclipped prediction).
    """
    vpreds = zero_pad(vpreds, mask)
    old_values, returns = zero_pad(old_values, mask), zero_pad(returns, mask)
    vclipped = old_values + torch.clamp(vpreds - old_values, -cliprange_value, cliprange_value)
    losses1 = (vpreds - returns).square()
    losses2 = (vclipped - returns).square()
    loss = 0.5 * masked_mean(torch.max(losses1, losses2), mask)
    with torch.no_grad():
        stats = {
            "clipfrac": masked_mean((losses2 > losses1).to(vpreds.dtype), mask),
            "vpred": masked_mean(vpreds, mask),
            "error": masked_mean(losses1, mask),
        }
    return loss, stats
