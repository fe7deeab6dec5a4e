"""Per-token maths of the learners: pure functions on response-aligned tensors.

Every per-token tensor is ``(N, T)`` and left-aligned with a float ``mask`` (1 on real
response tokens, see :class:`agents.rl.batch.TokenBatch`). Values at padded positions are
ignored (they may hold anything finite or not); outputs are zero there.

The maths follows the paper (and TRL 0.7, which the official CORY code is built on):

- per-token reward ``r_t = -kl_coef * KL_t``, with the task score added at the last real
  token of each response (:func:`compute_rewards`);
- GAE over the response tokens, returns ``= advantages + values``, advantages whitened
  over the batch (:func:`compute_gae`).

Deliberate differences from TRL 0.7: padding is zeroed in :func:`masked_whiten`'s output
(TRL's ``whiten_rewards`` leaks whitened padding into the GAE of the last real token), and
the unbiased variance of a single element is taken as 0 instead of NaN.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

KLEstimator = Literal["kl", "abs", "mse", "full"]
KL_ESTIMATORS: tuple[str, ...] = ("kl", "abs", "mse", "full")

__all__ = [
    "KL_ESTIMATORS",
    "compute_gae",
    "compute_rewards",
    "entropy_from_logits",
    "kl_penalty",
    "last_token_index",
    "logprobs_and_entropy",
    "logprobs_from_logits",
    "masked_mean",
    "masked_var",
    "masked_whiten",
    "zero_pad",
]


def logprobs_from_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Log-probability of ``labels`` (shape ``(...)``) under ``logits`` (shape ``(..., V)``)."""
    logp = F.log_softmax(logits, dim=-1)
    return torch.gather(logp, -1, labels.unsqueeze(-1)).squeeze(-1)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the categorical distribution given by ``logits`` ``(..., V)`` -> ``(...)``."""
    pd = torch.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - (pd * logits).sum(-1)


def logprobs_and_entropy(
    logits: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log p(labels), entropy)``, each ``(...)``, from ``logits`` ``(..., V)`` in float32,
    sharing one log-softmax (what a policy's forward needs: one pass over the vocabulary)."""
    logp = logits.float().log_softmax(-1)
    logprobs = logp.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    return logprobs, -(logp.exp() * logp).sum(-1)


def zero_pad(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``x`` with 0 wherever ``mask`` is 0 (NaN and inf there included)."""
    return torch.where(mask != 0, x, torch.zeros((), dtype=x.dtype, device=x.device))


def masked_mean(x: torch.Tensor, mask: torch.Tensor, axis: int | None = None) -> torch.Tensor:
    """Mean of ``x`` over the positions where ``mask`` is non-zero (over ``axis`` if given)."""
    mask = mask.to(x.dtype)
    x = zero_pad(x, mask) * mask
    if axis is None:
        return x.sum() / mask.sum()
    return x.sum(axis) / mask.sum(axis)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of ``x`` over the masked positions (Bessel-corrected when ``unbiased``).

    Raises ``ValueError`` for an empty mask; a single element has variance 0.
    """
    mask = mask.to(x.dtype)
    count = mask.sum()
    if count == 0:
        raise ValueError("masked_var: the mask is empty")
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    if unbiased and count > 1:
        var = var * count / (count - 1)
    return var


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """``(x - mean) / sqrt(var + 1e-8)`` over the masked positions; padding set to 0.

    With ``shift_mean=False`` the mean is added back (only the scale is normalised).
    """
    mask = mask.to(x.dtype)
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    whitened = (x - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        whitened = whitened + mean
    return zero_pad(whitened, mask)


def kl_penalty(
    logprob: torch.Tensor, ref_logprob: torch.Tensor, estimator: str = "kl"
) -> torch.Tensor:
    """Per-token KL estimate between the policy and the reference.

    - ``kl``: ``logp - ref`` (unbiased for samples from the policy, can be negative);
    - ``abs``: ``|logp - ref|``;
    - ``mse``: ``0.5 * (logp - ref)^2``;
    - ``full``: the exact ``KL(pi || ref) = sum_v pi(v) (log pi(v) - log ref(v))``; here both
      arguments are full log-probability distributions ``(..., V)`` and the result is ``(...)``.
    """
    if estimator == "kl":
        return logprob - ref_logprob
    if estimator == "abs":
        return (logprob - ref_logprob).abs()
    if estimator == "mse":
        return 0.5 * (logprob - ref_logprob).square()
    if estimator == "full":
        if logprob.shape != ref_logprob.shape:
            raise ValueError(
                f"full KL needs equal shapes, got {logprob.shape} and {ref_logprob.shape}"
            )
        p = logprob.exp()
        terms = torch.where(p > 0, p * (logprob - ref_logprob), torch.zeros_like(p))
        return terms.sum(-1)
    raise ValueError(f"unknown KL estimator {estimator!r}; expected one of {KL_ESTIMATORS}")


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """(N,) int64: index of the last non-zero entry of each row of ``mask`` ``(N, T)``."""
    if not bool((mask != 0).any(1).all()):
        raise ValueError("every row needs at least one real response token")
    t = torch.arange(mask.shape[1], device=mask.device)
    return torch.where(mask != 0, t, -1).argmax(1)


def compute_rewards(
    scores: torch.Tensor | np.ndarray,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    mask: torch.Tensor,
    kl_coef: float,
    estimator: str = "kl",
    full_logprobs: torch.Tensor | None = None,
    full_ref_logprobs: torch.Tensor | None = None,
    kls: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Token-level rewards: ``-kl_coef * KL_t`` everywhere, plus the score at the last real token.

    ``scores`` is ``(N,)``; ``logprobs``/``ref_logprobs`` are the sampled tokens' log-probs
    ``(N, T)``. The ``full`` estimator needs ``full_logprobs``/``full_ref_logprobs``
    ``(N, T, V)``. ``kls`` ``(N, T)``, if given, is used as the per-token KL instead (e.g.
    computed chunk by chunk to avoid holding ``(N, T, V)`` tensors).

    Returns ``(rewards, non_score_rewards, kls)``, each ``(N, T)`` and zero on padding.
    """
    if kls is None:
        if estimator == "full":
            if full_logprobs is None or full_ref_logprobs is None:
                raise ValueError("the 'full' estimator needs full_logprobs and full_ref_logprobs")
            kls = kl_penalty(full_logprobs, full_ref_logprobs, "full")
        else:
            kls = kl_penalty(logprobs, ref_logprobs, estimator)
    kls = zero_pad(kls, mask)
    non_score = zero_pad(-kl_coef * kls, mask)
    rewards = non_score.clone()
    rows = torch.arange(rewards.shape[0], device=rewards.device)
    scores = torch.as_tensor(scores).to(device=rewards.device, dtype=rewards.dtype)
    rewards[rows, last_token_index(mask)] += scores
    return rewards, non_score, kls


def compute_gae(
    values: torch.Tensor,
    rewards: torch.Tensor,
    mask: torch.Tensor,
    gamma: float,
    lam: float,
    whiten: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over the response tokens.

    ``delta_t = r_t + gamma * V_{t+1} - V_t`` (``V`` after the last real token is 0),
    ``A_t = delta_t + gamma * lam * A_{t+1}``; ``returns = A + V`` (before whitening);
    ``A`` is then whitened over the masked positions when ``whiten``. Both are detached and
    zero on padding. Rows must be left-aligned (as in :class:`TokenBatch`).
    """
    values, rewards = zero_pad(values, mask), zero_pad(rewards, mask)
    n, t_len = rewards.shape
    advantages = torch.zeros_like(rewards)
    last = torch.zeros(n, dtype=rewards.dtype, device=rewards.device)
    for t in reversed(range(t_len)):
        next_values = values[:, t + 1] if t < t_len - 1 else 0.0
        delta = rewards[:, t] + gamma * next_values - values[:, t]
        last = delta + gamma * lam * last
        advantages[:, t] = last
    returns = advantages + values
    if whiten:
        advantages = masked_whiten(advantages, mask)
    return advantages.detach(), returns.detach()
