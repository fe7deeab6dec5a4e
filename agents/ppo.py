"""The PPO core: pure functions on response-aligned tensors, plus one small learner.

The maths follows the paper (and TRL 0.7, which the official CORY code is built on):

- per-token reward ``r_t = -kl_coef * KL_t``, with the task score added at the last real
  token of each response (:func:`compute_rewards`);
- GAE over the response tokens, returns ``= advantages + values``, advantages whitened
  over the batch (:func:`compute_gae`);
- clipped policy loss and clipped value loss, ``loss = pg_loss + vf_coef * vf_loss``
  (:func:`policy_loss`, :func:`value_loss`);
- an adaptive KL coefficient (Ziegler et al. 2019, :class:`AdaptiveKLController`).

Every per-token tensor is ``(N, T)`` and left-aligned with a float ``mask`` (1 on real
response tokens, see :class:`agents.batch.TokenBatch`). Values at padded positions are
ignored (they may hold anything finite or not); outputs are zero there.

Deliberate differences from TRL 0.7: padding is zeroed in :func:`masked_whiten`'s output
(TRL's ``whiten_rewards`` leaks whitened padding into the GAE of the last real token), and
the unbiased variance of a single element is taken as 0 instead of NaN.
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from .batch import TokenBatch

KLEstimator = Literal["kl", "abs", "mse", "full"]
KL_ESTIMATORS: tuple[str, ...] = ("kl", "abs", "mse", "full")

__all__ = [
    "KL_ESTIMATORS",
    "AdaptiveKLController",
    "FixedKLController",
    "LearnerBase",
    "PPOConfig",
    "PPOLearner",
    "RunningMoments",
    "compute_gae",
    "compute_rewards",
    "entropy_from_logits",
    "kl_penalty",
    "last_token_index",
    "logprobs_from_logits",
    "masked_mean",
    "masked_var",
    "masked_whiten",
    "optimise",
    "policy_loss",
    "process_scores",
    "rollout_pass",
    "value_loss",
]


# --------------------------------------------------------------------------- pure functions


def logprobs_from_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Log-probability of ``labels`` (shape ``(...)``) under ``logits`` (shape ``(..., V)``)."""
    logp = F.log_softmax(logits, dim=-1)
    return torch.gather(logp, -1, labels.unsqueeze(-1)).squeeze(-1)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the categorical distribution given by ``logits`` ``(..., V)`` -> ``(...)``."""
    pd = torch.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - (pd * logits).sum(-1)


def _zero_pad(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return torch.where(mask != 0, x, torch.zeros((), dtype=x.dtype, device=x.device))


def masked_mean(x: torch.Tensor, mask: torch.Tensor, axis: int | None = None) -> torch.Tensor:
    """Mean of ``x`` over the positions where ``mask`` is non-zero (over ``axis`` if given)."""
    mask = mask.to(x.dtype)
    x = _zero_pad(x, mask) * mask
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
    return _zero_pad(whitened, mask)


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
    kls = _zero_pad(kls, mask)
    non_score = _zero_pad(-kl_coef * kls, mask)
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
    values, rewards = _zero_pad(values, mask), _zero_pad(rewards, mask)
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
    log_ratio = _zero_pad(logprobs - old_logprobs, mask)  # before exp: no inf/NaN from padding
    advantages = _zero_pad(advantages, mask)
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
    vpreds = _zero_pad(vpreds, mask)
    old_values, returns = _zero_pad(old_values, mask), _zero_pad(returns, mask)
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


# --------------------------------------------------------------------------- controllers


class AdaptiveKLController:
    """Adaptive KL coefficient (Ziegler et al. 2019).

    ``update(current, n_steps)``: ``e = clip(current / target - 1, -0.2, 0.2)``,
    ``value *= 1 + e * n_steps / horizon``.
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: float) -> None:
        if target <= 0 or horizon <= 0:
            raise ValueError("target and horizon must be positive")
        self.value = float(init_kl_coef)
        self.target = float(target)
        self.horizon = float(horizon)

    def update(self, current_kl: float, n_steps: int) -> None:
        error = float(np.clip(float(current_kl) / self.target - 1.0, -0.2, 0.2))
        self.value *= 1.0 + error * n_steps / self.horizon

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])


class FixedKLController:
    """A constant KL coefficient; ``update`` does nothing."""

    def __init__(self, kl_coef: float) -> None:
        self.value = float(kl_coef)

    def update(self, current_kl: float, n_steps: int) -> None:
        pass

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])


class RunningMoments:
    """Running mean / variance of all values seen (Chan et al.'s parallel formula, as TRL).

    ``var`` is the population variance, ``std`` the Bessel-corrected standard deviation.
    """

    def __init__(self) -> None:
        self.mean = 0.0
        self.std = 1.0
        self.var = 1.0
        self.count = 1e-24

    @torch.no_grad()
    def update(self, xs: torch.Tensor | np.ndarray | list[float]) -> tuple[float, float]:
        """Fold in a batch; returns the batch's ``(mean, unbiased std)``."""
        xs = torch.as_tensor(xs).detach().to("cpu", torch.float64).flatten()
        n = xs.numel()
        if n == 0:
            raise ValueError("RunningMoments.update: empty batch")
        xs_var, xs_mean = torch.var_mean(xs, correction=0)
        xs_mean, xs_var = float(xs_mean), float(xs_var)
        delta = xs_mean - self.mean
        tot = self.count + n
        old_sum = self.var * self.count + delta**2 * self.count * n / tot
        self.mean += delta * n / tot
        self.var = (old_sum + xs_var * n) / tot
        self.std = math.sqrt(self.var * tot / (tot - 1)) if tot > 1 else 0.0
        self.count = tot
        return xs_mean, (math.sqrt(xs_var * n / (n - 1)) if n > 1 else 0.0)

    def state_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "std": self.std, "var": self.var, "count": self.count}

    def load_state_dict(self, state: dict[str, float]) -> None:
        for k in ("mean", "std", "var", "count"):
            setattr(self, k, float(state[k]))


def process_scores(
    scores: torch.Tensor | np.ndarray,
    moments: RunningMoments | None,
    use_score_scaling: bool = False,
    use_score_norm: bool = False,
    score_clip: float | None = None,
) -> torch.Tensor:
    """TRL's score processing: scale by the running std (and centre by the running mean
    with ``use_score_norm``), then clip to ``[-score_clip, score_clip]``.

    ``moments`` is updated with the raw scores when ``use_score_scaling``.
    """
    scores = torch.as_tensor(scores).float()
    if use_score_norm and not use_score_scaling:
        raise ValueError("use_score_norm requires use_score_scaling")
    if use_score_scaling:
        if moments is None:
            raise ValueError("use_score_scaling needs a RunningMoments")
        moments.update(scores)
        factor = moments.std + torch.finfo(scores.dtype).eps
        scores = (scores - moments.mean) / factor if use_score_norm else scores / factor
    if score_clip is not None:
        scores = scores.clamp(-score_clip, score_clip)
    return scores


# --------------------------------------------------------------------------- config


@dataclass
class PPOConfig:
    """Hyper-parameters of :class:`PPOLearner` (defaults: the paper's IMDB setting / TRL 0.7)."""

    learning_rate: float = 1.41e-5
    """Adam learning rate of the default optimiser."""
    batch_size: int = 256
    """Trajectories per update (the trainer's rollout size; the learner uses ``len(batch)``)."""
    mini_batch_size: int = 256
    """Trajectories per forward/backward pass (also the chunk size of the no-grad passes)."""
    ppo_epochs: int = 4
    """Passes over the batch per update."""
    gamma: float = 1.0
    """Discount factor over response tokens."""
    lam: float = 0.95
    """GAE lambda."""
    cliprange: float = 0.2
    """Policy ratio clip range."""
    cliprange_value: float = 0.2
    """Value prediction clip range (around the rollout values)."""
    vf_coef: float = 0.1
    """Weight of the value loss in ``loss = pg_loss + vf_coef * vf_loss``."""
    init_kl_coef: float = 0.2
    """Initial (or fixed) KL coefficient eta."""
    adap_kl_ctrl: bool = True
    """Use the adaptive KL controller (else a fixed coefficient)."""
    target: float = 6.0
    """Target sequence KL of the adaptive controller."""
    horizon: float = 10000.0
    """Horizon of the adaptive controller."""
    kl_penalty: str = "kl"
    """KL estimator of the reward penalty: ``kl``, ``abs``, ``mse`` or ``full``."""
    use_score_scaling: bool = False
    """Divide scores by their running standard deviation."""
    use_score_norm: bool = False
    """Also subtract the running mean (requires ``use_score_scaling``)."""
    score_clip: float | None = None
    """Clip processed scores to ``[-score_clip, score_clip]``."""
    whiten_rewards: bool = False
    """Whiten the token rewards (scale only) before GAE."""
    max_grad_norm: float | None = 1.0
    """Clip the gradient norm of the trainable parameters (None: no clipping)."""
    target_kl: float | None = None
    """Stop the remaining epochs once an epoch's mean approx KL exceeds ``1.5 * target_kl``."""
    ratio_threshold: float = 10.0
    """Skip (no backward) a mini-batch whose mean probability ratio exceeds this."""
    gradient_accumulation_steps: int = 1
    """Mini-batches accumulated per optimiser step."""
    seed: int = 0
    """Seed of the learner's private generator for mini-batch shuffling."""

    def __post_init__(self) -> None:
        if self.kl_penalty not in KL_ESTIMATORS:
            raise ValueError(f"kl_penalty must be one of {KL_ESTIMATORS}, got {self.kl_penalty!r}")
        for name in ("batch_size", "mini_batch_size", "ppo_epochs", "gradient_accumulation_steps"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.use_score_norm and not self.use_score_scaling:
            raise ValueError("use_score_norm requires use_score_scaling")
        if self.target_kl is not None and self.target_kl <= 0:
            raise ValueError("target_kl must be positive or None")


# --------------------------------------------------------------------------- learner

MinibatchLoss = Callable[[TokenBatch, torch.Tensor], tuple[torch.Tensor, dict[str, torch.Tensor]]]
"""``(sub_batch, idx) -> (loss, stats)``: the loss of the mini-batch ``batch.subset(idx)``
(``idx`` indexes the full batch's rollout tensors) and its detached 0-d stats, which must
include ``policy/ratio`` and ``policy/approxkl``."""


def optimise(
    learner: Any,
    batch: TokenBatch,
    minibatch_loss: MinibatchLoss,
    params: list[torch.Tensor],
    name: str = "PPO",
) -> dict[str, Any]:
    """The clipped multi-epoch optimisation shared by :class:`PPOLearner` and
    :class:`agents.rloo.RLOOLearner`.

    Uses ``learner.config`` (:class:`PPOConfig`), ``learner.optimizer``,
    ``learner.lr_scheduler`` and ``learner.generator``. For each of ``ppo_epochs`` epochs:
    a permutation drawn from ``learner.generator``, cut into optimiser steps of
    ``mini_batch_size * gradient_accumulation_steps`` trajectories and those into
    mini-batches; a mini-batch whose mean ratio exceeds ``ratio_threshold`` is skipped (with
    a warning naming ``name``), the others' losses are back-propagated scaled by their share
    of the step; then ``params`` are clipped to ``max_grad_norm`` and the optimiser steps.
    Stops after the epoch whose mean approx KL exceeds ``1.5 * target_kl``; steps the lr
    scheduler once at the end.

    Returns ``minibatch`` (each stat's mean over all mini-batches, skipped ones included, in
    first-seen order), ``grad_norm`` (mean clipped norm, or None), ``epochs``,
    ``early_stop``, ``skipped`` (mini-batches) and ``learning_rate`` (before the update).
    """
    cfg = learner.config
    n, device = len(batch), batch.device
    lr = float(learner.optimizer.param_groups[0]["lr"])
    mb = min(cfg.mini_batch_size, n)
    backward_bs = mb * cfg.gradient_accumulation_steps
    mb_stats: dict[str, list[torch.Tensor]] = defaultdict(list)
    grad_norms: list[torch.Tensor] = []
    epochs, early_stop, skipped = 0, False, 0
    for _ in range(cfg.ppo_epochs):
        perm = torch.randperm(n, generator=learner.generator).to(device)
        epoch_kl: list[torch.Tensor] = []
        for b_start in range(0, n, backward_bs):
            b_idx = perm[b_start : b_start + backward_bs]
            learner.optimizer.zero_grad(set_to_none=True)
            stepped = False
            for m_start in range(0, len(b_idx), mb):
                idx = b_idx[m_start : m_start + mb]
                loss, stats = minibatch_loss(batch.subset(idx), idx)
                for k, v in stats.items():
                    mb_stats[k].append(v)
                epoch_kl.append(stats["policy/approxkl"])
                ratio = float(stats["policy/ratio"])
                if ratio > cfg.ratio_threshold:
                    warnings.warn(
                        f"{name}: mean ratio {ratio:.2f} > ratio_threshold "
                        f"{cfg.ratio_threshold}; skipping this mini-batch",
                        stacklevel=3,  # the learner's caller
                    )
                    skipped += 1
                    continue
                (loss * (len(idx) / len(b_idx))).backward()
                stepped = True
            if stepped:
                if cfg.max_grad_norm is not None:
                    grad_norms.append(
                        torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm).detach()
                    )
                learner.optimizer.step()
        epochs += 1
        if cfg.target_kl is not None and float(torch.stack(epoch_kl).mean()) > 1.5 * cfg.target_kl:
            early_stop = True
            break
    learner.optimizer.zero_grad(set_to_none=True)
    if learner.lr_scheduler is not None:
        learner.lr_scheduler.step()
    with torch.no_grad():
        return {
            "minibatch": {k: float(torch.stack(v).mean()) for k, v in mb_stats.items()},
            "grad_norm": float(torch.stack(grad_norms).mean()) if grad_norms else None,
            "epochs": epochs,
            "early_stop": early_stop,
            "skipped": skipped,
            "learning_rate": lr,
        }


@torch.no_grad()
def rollout_pass(
    agent: Any, batch: TokenBatch, chunk: int, estimator: str, with_values: bool = True
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor | None]:
    """Old log-probs, values (None unless ``with_values``), ref log-probs and (for the
    ``full`` estimator, else None) per-token KLs of ``batch``, ``chunk`` rows at a time;
    each ``(N, T)`` float32, zero on padding."""
    n, t_len = batch.response_ids.shape
    full = estimator == "full"
    old_lp, values, ref_lp, kls = (torch.zeros(n, t_len, device=batch.device) for _ in range(4))
    for start in range(0, n, chunk):
        idx = torch.arange(start, min(start + chunk, n), device=batch.device)
        sub = batch.subset(idx)
        t = sub.response_ids.shape[1]
        out = agent.forward(sub, with_logits=full)
        ref = agent.ref_logprobs(sub, full=full)
        if full:
            if out.logits is None:
                raise ValueError(
                    "the 'full' KL estimator needs agent.forward(with_logits=True) logits"
                )
            full_ref = ref.float()
            kls[idx, :t] = kl_penalty(F.log_softmax(out.logits.float(), dim=-1), full_ref, "full")
            ref = logprobs_from_logits(full_ref, sub.response_ids)  # already normalised
        old_lp[idx, :t] = out.logprobs.detach().float()
        if with_values:
            values[idx, :t] = out.values.detach().float()
        ref_lp[idx, :t] = ref.float()
    mask = batch.response_mask
    old_lp, values, ref_lp, kls = (_zero_pad(x, mask) for x in (old_lp, values, ref_lp, kls))
    return old_lp, (values if with_values else None), ref_lp, (kls if full else None)


class LearnerBase:
    """What :class:`PPOLearner` and :class:`agents.rloo.RLOOLearner` share: the optimiser,
    the KL controller, the running score moments, a private shuffling generator, and their
    :meth:`state_dict` (exactly those; the weights are the agent's). Like torch's, the
    returned state shares tensors with the live optimiser: ``torch.save`` it or
    ``copy.deepcopy`` it to take a snapshot.
    """

    def __init__(
        self,
        agent: Any,
        config: PPOConfig | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        lr_scheduler: Any | None = None,
    ) -> None:
        self.agent = agent
        self.config = config = config if config is not None else PPOConfig()
        self.optimizer = optimizer or torch.optim.Adam(
            list(agent.trainable_parameters()), lr=config.learning_rate
        )
        self.lr_scheduler = lr_scheduler
        if config.adap_kl_ctrl:
            self.kl_ctl: AdaptiveKLController | FixedKLController = AdaptiveKLController(
                config.init_kl_coef, config.target, config.horizon
            )
        else:
            self.kl_ctl = FixedKLController(config.init_kl_coef)
        self.running = RunningMoments()
        self.generator = torch.Generator().manual_seed(config.seed)
        self.num_updates = 0

    def _scores(
        self, scores: np.ndarray | torch.Tensor, n: int, device: torch.device
    ) -> torch.Tensor:
        s = torch.as_tensor(np.asarray(scores) if not torch.is_tensor(scores) else scores)
        s = s.detach().to(device=device, dtype=torch.float32).reshape(-1)
        if s.numel() != n:
            raise ValueError(f"got {s.numel()} scores for a batch of {n} trajectories")
        if not bool(torch.isfinite(s).all()):
            raise ValueError("scores must be finite")
        return s

    def _rollout_pass(
        self, batch: TokenBatch, with_values: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor | None]:
        """:func:`rollout_pass` with this learner's agent, chunk size and KL estimator."""
        cfg = self.config
        return rollout_pass(self.agent, batch, cfg.mini_batch_size, cfg.kl_penalty, with_values)

    def state_dict(self) -> dict[str, Any]:
        """Optimiser, KL controller, score moments, shuffling generator (not the weights)."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "kl_ctl": self.kl_ctl.state_dict(),
            "running": self.running.state_dict(),
            "generator": self.generator.get_state(),
            "lr_scheduler": self.lr_scheduler.state_dict()
            if self.lr_scheduler is not None
            else None,
            "num_updates": self.num_updates,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.kl_ctl.load_state_dict(state["kl_ctl"])
        self.running.load_state_dict(state["running"])
        self.generator.set_state(state["generator"].clone())
        if self.lr_scheduler is not None and state.get("lr_scheduler") is not None:
            self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        self.num_updates = int(state.get("num_updates", 0))


class PPOLearner(LearnerBase):
    """Token-level PPO on one agent (a :class:`agents.learner.Learner`).

    ``agent`` must provide ``forward(batch, with_logits=False)`` (an output with
    ``logprobs``, ``values``, ``entropy``, ``logits`` fields, response-aligned, with grad),
    ``ref_logprobs(batch, full=False)`` (no grad) and ``trainable_parameters()``.

    The learner owns the optimiser, the KL controller, the running score moments and a
    private generator for shuffling; :meth:`state_dict` holds exactly those (the weights
    are the agent's). Like torch's, the returned state shares tensors with the live
    optimiser: ``torch.save`` it or ``copy.deepcopy`` it to take a snapshot.
    """

    samples_per_query: int = 1

    def update(self, batch: TokenBatch, scores: np.ndarray | torch.Tensor) -> dict[str, float]:
        """One PPO update on ``batch`` with per-trajectory ``scores`` ``(N,)``; returns stats."""
        cfg = self.config
        n, device = len(batch), batch.device
        raw_scores = self._scores(scores, n, device)
        scores_t = process_scores(
            raw_scores, self.running, cfg.use_score_scaling, cfg.use_score_norm, cfg.score_clip
        )
        mask = batch.response_mask.float()

        old_lp, old_values, ref_lp, full_kls = self._rollout_pass(batch)
        kl_coef = self.kl_ctl.value
        rewards, non_score, kls = compute_rewards(
            scores_t, old_lp, ref_lp, mask, kl_coef, cfg.kl_penalty, kls=full_kls
        )
        if cfg.whiten_rewards:
            rewards = masked_whiten(rewards, mask, shift_mean=False)
        advantages, returns = compute_gae(old_values, rewards, mask, cfg.gamma, cfg.lam)

        def minibatch_loss(
            sub: TokenBatch, idx: torch.Tensor
        ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            t = sub.response_ids.shape[1]
            sub_mask = sub.response_mask.float()
            out = self.agent.forward(sub)
            pg, ps = policy_loss(
                out.logprobs.float(), old_lp[idx, :t], advantages[idx, :t], sub_mask,
                cfg.cliprange, entropy=out.entropy,
            )
            vf, vs = value_loss(
                out.values.float(), old_values[idx, :t], returns[idx, :t], sub_mask,
                cfg.cliprange_value,
            )
            loss = pg + cfg.vf_coef * vf
            stats = {f"policy/{k}": v for k, v in ps.items()}
            stats.update({f"val/{k}": v for k, v in vs.items()})
            stats.update(
                {"loss/policy": pg.detach(), "loss/value": vf.detach(), "loss/total": loss.detach()}
            )
            return loss, stats

        params = list(self.agent.trainable_parameters())
        opt = optimise(self, batch, minibatch_loss, params, "PPO")

        with torch.no_grad():
            mean_kl = float(kls.sum(1).mean())
            stats = {f"ppo/{k}": v for k, v in opt["minibatch"].items()}
            returns_var = masked_var(returns, mask)
            stats.update(
                {
                    "objective/kl": mean_kl,
                    "objective/kl_coef": kl_coef,
                    "objective/entropy": float((-old_lp * mask).sum(1).mean()),
                    "objective/ref_logprobs": float(masked_mean(ref_lp, mask)),
                    "objective/logprobs": float(masked_mean(old_lp, mask)),
                    "ppo/mean_non_score_reward": float(masked_mean(non_score, mask)),
                    "ppo/mean_scores": float(scores_t.mean()),
                    "ppo/std_scores": float(scores_t.std()) if n > 1 else 0.0,
                    "env/reward_mean": float(raw_scores.mean()),
                    "env/reward_std": float(raw_scores.std()) if n > 1 else 0.0,
                    "ppo/returns/mean": float(masked_mean(returns, mask)),
                    "ppo/returns/var": float(returns_var),
                    "ppo/val/mean": float(masked_mean(old_values, mask)),
                    "ppo/val/var": float(masked_var(old_values, mask)),
                    "ppo/learning_rate": opt["learning_rate"],
                    "ppo/epochs": float(opt["epochs"]),
                    "ppo/early_stop": float(opt["early_stop"]),
                    "ppo/skipped_minibatches": float(opt["skipped"]),
                    "tokens/queries_len_mean": float(batch.query_lengths.float().mean()),
                    "tokens/responses_len_mean": float(mask.sum(1).mean()),
                }
            )
            stats["ppo/val/var_explained"] = (
                1.0 - stats["ppo/val/error"] / float(returns_var) if float(returns_var) > 0 else 0.0
            )
            if opt["grad_norm"] is not None:
                stats["ppo/grad_norm"] = opt["grad_norm"]
        self.kl_ctl.update(mean_kl, n)
        self.num_updates += 1
        return stats
