"""The GRPO family's maths: pure functions on grouped, response-aligned tensors.

A batch of ``N = groups * G`` answers holds ``G`` consecutive answers per query (see
:mod:`agents.rl.learner`). Each option of :class:`agents.rl.grpo.GRPOLearner` is a string
naming one small function here (verl style):

- :data:`REWARD_SCALES` — how a group's centred rewards are scaled into advantages;
- :data:`LOSS_AGGREGATIONS` — how a per-token loss matrix becomes one number;
- :data:`KL_LOSS_ESTIMATORS` — the per-token KL of the loss term (Schulman's k1, k2, k3);
- :func:`grpo_surrogate` — the clipped surrogate with clip-higher, dual clip and a token
  or sequence (GSPO) importance ratio.

Per-token tensors are ``(n, T)`` with a float ``mask`` (1 on real answer tokens); outputs
are zero on padding.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .maths import masked_mean, zero_pad

__all__ = [
    "ADVANTAGE_EPS",
    "IMPORTANCE_SAMPLING",
    "KL_LOSS_ESTIMATORS",
    "LOSS_AGGREGATIONS",
    "REWARD_SCALES",
    "UNIFORM_TOL",
    "aggregate_loss",
    "group_advantages",
    "grpo_surrogate",
    "kl_loss_term",
    "sequence_log_ratio",
    "uniform_groups",
]

ADVANTAGE_EPS = 1e-4
"""Added to a standard deviation before dividing by it (TRL's GRPO value)."""
UNIFORM_TOL = 1e-6
"""A group whose rewards span at most this is uniform (all equal: no learning signal)."""
IMPORTANCE_SAMPLING = ("token", "sequence")


# ------------------------------------------------------------------ advantages


def _groups(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    rewards = torch.as_tensor(rewards).float()
    if rewards.dim() != 1 or rewards.numel() == 0 or rewards.numel() % group_size:
        raise ValueError(
            f"rewards must be (N,) with N a positive multiple of the group size "
            f"{group_size}, got shape {tuple(rewards.shape)}"
        )
    return rewards.reshape(-1, group_size)


def _scale_group(groups: torch.Tensor, centred: torch.Tensor) -> torch.Tensor:
    return centred / (groups.std(1, keepdim=True) + ADVANTAGE_EPS)


def _scale_batch(groups: torch.Tensor, centred: torch.Tensor) -> torch.Tensor:
    return centred / (groups.std() + ADVANTAGE_EPS)


REWARD_SCALES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "group": _scale_group,  # GRPO (Shao et al. 2024): (R - group mean) / group std
    "batch": _scale_batch,  # group mean, batch std (Liu et al. 2025, "Tricks or Traps"; TRL)
    "none": lambda groups, centred: centred,  # Dr. GRPO (Liu et al. 2025): R - group mean
}


def group_advantages(rewards: torch.Tensor, group_size: int, scale: str = "group") -> torch.Tensor:
    """``(N,)`` advantages: each reward minus its group's mean, scaled by ``scale``
    (:data:`REWARD_SCALES`; standard deviations are unbiased, plus :data:`ADVANTAGE_EPS`)."""
    if scale not in REWARD_SCALES:
        raise ValueError(f"scale_rewards must be one of {tuple(REWARD_SCALES)}, got {scale!r}")
    groups = _groups(rewards, group_size)
    centred = groups - groups.mean(1, keepdim=True)
    return REWARD_SCALES[scale](groups, centred).reshape(-1)


def uniform_groups(scores: torch.Tensor, group_size: int, tol: float = UNIFORM_TOL) -> torch.Tensor:
    """``(N/group_size,)`` bool: the groups whose ``group_size`` scores are all equal (within
    ``tol``)."""
    groups = _groups(scores, group_size)
    return (groups.max(1).values - groups.min(1).values) <= tol


# ------------------------------------------------------------------ loss aggregation


def _token_mean(loss: torch.Tensor, mask: torch.Tensor, norm_length: float | None) -> torch.Tensor:
    return (loss * mask).sum() / mask.sum().clamp(min=1.0)


def _seq_mean_token_mean(
    loss: torch.Tensor, mask: torch.Tensor, norm_length: float | None
) -> torch.Tensor:
    lengths = mask.sum(1)
    rows = lengths > 0
    per_row = (loss * mask).sum(1) / lengths.clamp(min=1.0)
    return (per_row * rows).sum() / rows.sum().clamp(min=1)


def _seq_mean_token_sum_norm(
    loss: torch.Tensor, mask: torch.Tensor, norm_length: float | None
) -> torch.Tensor:
    rows = mask.sum(1) > 0
    constant = float(norm_length) if norm_length else float(mask.shape[1])
    return (loss * mask).sum() / (rows.sum().clamp(min=1) * constant)


LOSS_AGGREGATIONS: dict[str, Callable[[torch.Tensor, torch.Tensor, float | None], torch.Tensor]] = {
    "token-mean": _token_mean,  # DAPO (Yu et al. 2025): every token of the mini-batch weighs the same
    "seq-mean-token-mean": _seq_mean_token_mean,  # GRPO as published: mean per answer, then over answers
    "seq-mean-token-sum-norm": _seq_mean_token_sum_norm,  # Dr. GRPO: token sums / a constant length
}


def aggregate_loss(
    loss: torch.Tensor,
    mask: torch.Tensor,
    mode: str = "token-mean",
    norm_length: float | None = None,
) -> torch.Tensor:
    """One number from the per-token ``loss`` ``(n, T)``:

    - ``token-mean``: ``sum(L * m) / sum(m)``;
    - ``seq-mean-token-mean``: ``mean_i [sum_t L_it m_it / sum_t m_it]``;
    - ``seq-mean-token-sum-norm``: ``mean_i [sum_t L_it m_it] / norm_length`` (None: ``T``).

    Rows without a real token are left out of every mean; an all-padding ``mask`` gives 0.
    """
    if mode not in LOSS_AGGREGATIONS:
        raise ValueError(
            f"loss_aggregation must be one of {tuple(LOSS_AGGREGATIONS)}, got {mode!r}"
        )
    return LOSS_AGGREGATIONS[mode](zero_pad(loss, mask), mask.to(loss.dtype), norm_length)


# ------------------------------------------------------------------ the KL term of the loss


def _k3(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    log_r = ref_logprobs - logprobs
    return torch.exp(log_r) - log_r - 1.0


KL_LOSS_ESTIMATORS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "k1": lambda lp, ref: lp - ref,  # log(pi/ref): unbiased, high variance, can be negative
    "k2": lambda lp, ref: 0.5 * (lp - ref).square(),  # biased, low variance, >= 0
    "k3": _k3,  # ref/pi - log(ref/pi) - 1: unbiased, low variance, >= 0 (GRPO's, DeepSeekMath eq. 4)
}


def kl_loss_term(
    logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor, estimator: str = "k3"
) -> torch.Tensor:
    """Per-token KL estimate of the policy to the reference (Schulman 2020, "Approximating KL
    divergence"), differentiable in ``logprobs``; zero on padding."""
    if estimator not in KL_LOSS_ESTIMATORS:
        raise ValueError(
            f"kl_estimator must be one of {tuple(KL_LOSS_ESTIMATORS)}, got {estimator!r}"
        )
    lp, ref = zero_pad(logprobs, mask), zero_pad(ref_logprobs, mask)
    return zero_pad(KL_LOSS_ESTIMATORS[estimator](lp, ref), mask)


# ------------------------------------------------------------------ the clipped surrogate


def sequence_log_ratio(
    logprobs: torch.Tensor, old_logprobs: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """``(n,)`` GSPO's length-normalised log ratio ``mean_t (log pi - log pi_old)``."""
    log_ratio = zero_pad(logprobs - old_logprobs, mask)
    return log_ratio.sum(1) / mask.sum(1).clamp(min=1.0)


def grpo_surrogate(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    cliprange_low: float,
    cliprange_high: float | None = None,
    dual_clip: float | None = None,
    level: str = "token",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-token clipped surrogate ``max(-A r, -A clip(r, 1 - eps_low, 1 + eps_high))``
    ``(n, T)`` and its detached stats; ``advantages`` ``(n,)`` is each answer's.

    - ``level="token"``: ``r_t = pi(y_t) / pi_old(y_t)`` (PPO, GRPO);
    - ``level="sequence"`` (GSPO, Zheng et al. 2025): ``r = exp(mean_t log r_t)`` for the
      whole answer, clipped as a whole; written GSPO-token style, ``r_t = sg[r] * pi / sg[pi]``,
      whose per-answer token mean has exactly GSPO's gradient;
    - ``dual_clip=c`` (Ye et al. 2020): for ``A < 0`` the loss is also capped at ``-A c``.

    Stats: ``clipfrac_low`` (``A < 0`` and ``r < 1 - eps_low``), ``clipfrac_high``
    (``A > 0`` and ``r > 1 + eps_high``), their sum ``clipfrac``, ``dual_clipfrac``,
    ``ratio`` (mean ``r`` over tokens), ``seq_ratio`` (mean sequence ratio over answers),
    ``approxkl``, ``policykl`` and ``advantages_mean``.
    """
    if level not in IMPORTANCE_SAMPLING:
        raise ValueError(f"importance_sampling must be one of {IMPORTANCE_SAMPLING}, got {level!r}")
    high = cliprange_low if cliprange_high is None else cliprange_high
    log_ratio = zero_pad(logprobs - old_logprobs, mask)
    seq = sequence_log_ratio(logprobs, old_logprobs, mask)
    if level == "sequence":
        log_ratio = zero_pad(logprobs - logprobs.detach() + seq.detach()[:, None], mask)
    ratio = torch.exp(log_ratio)
    adv = advantages.to(ratio.dtype)[:, None].expand_as(ratio)
    clipped = torch.clamp(ratio, 1.0 - cliprange_low, 1.0 + high)
    loss = torch.max(-adv * ratio, -adv * clipped)
    if dual_clip is not None:
        loss = torch.where(adv < 0, torch.min(loss, -adv * dual_clip), loss)
    with torch.no_grad():
        r = ratio.detach()
        low_hit = ((adv < 0) & (r < 1.0 - cliprange_low)).to(r.dtype)
        high_hit = ((adv > 0) & (r > 1.0 + high)).to(r.dtype)
        token_lr = zero_pad(logprobs.detach() - old_logprobs, mask)
        stats = {
            "clipfrac_low": masked_mean(low_hit, mask),
            "clipfrac_high": masked_mean(high_hit, mask),
            "clipfrac": masked_mean(low_hit + high_hit, mask),
            "ratio": masked_mean(r, mask),
            "seq_ratio": seq.detach().exp().mean(),
            "approxkl": 0.5 * masked_mean(token_lr.square(), mask),
            "policykl": masked_mean(-token_lr, mask),
            "advantages_mean": masked_mean(adv, mask),
        }
        if dual_clip is not None:
            stats["dual_clipfrac"] = masked_mean(((adv < 0) & (r > dual_clip)).to(r.dtype), mask)
    return zero_pad(loss, mask), stats
