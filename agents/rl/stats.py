"""The statistics every learner of :mod:`agents.rl` reports after an update (TRL's names
where TRL has one); a learner adds its own with ``extra_stats``."""

from __future__ import annotations

from typing import Any

import torch

from .batch import TokenBatch
from .maths import masked_mean
from .passes import Rollout

__all__ = ["shared_stats"]


@torch.no_grad()
def shared_stats(ns: str, batch: TokenBatch, ro: Rollout, opt: dict[str, Any]) -> dict[str, float]:
    """The shared statistics of one update: the mini-batches' means and the loop's counts
    under the learner's namespace ``ns``, the KL, entropy, score and length statistics under
    their own (``objective/``, ``ppo/``, ``env/``, ``tokens/``); ``opt`` is
    :func:`agents.rl.optimise.optimise`'s result."""
    n, mask, nan = len(batch), ro.mask, float("nan")
    stats = {f"{ns}/{k}": v for k, v in opt["minibatch"].items()}
    stats.update(
        {
            "objective/kl": float(ro.kls.sum(1).mean()) if ro.kls is not None else nan,
            "objective/kl_coef": ro.kl_coef,
            "objective/entropy": float((-ro.old_logprobs * mask).sum(1).mean()),
            "objective/ref_logprobs": float(masked_mean(ro.ref_logprobs, mask))
            if ro.ref_logprobs is not None
            else nan,
            "objective/logprobs": float(masked_mean(ro.old_logprobs, mask)),
            "ppo/mean_non_score_reward": float(masked_mean(ro.non_score_rewards, mask)),
            "ppo/mean_scores": float(ro.scores.mean()),
            "ppo/std_scores": float(ro.scores.std()) if n > 1 else 0.0,
            "env/reward_mean": float(ro.raw_scores.mean()),
            "env/reward_std": float(ro.raw_scores.std()) if n > 1 else 0.0,
            f"{ns}/learning_rate": opt["learning_rate"],
            f"{ns}/epochs": float(opt["epochs"]),
            f"{ns}/early_stop": float(opt["early_stop"]),
            f"{ns}/skipped_minibatches": float(opt["skipped"]),
            f"{ns}/nonfinite_steps": float(opt["nonfinite"]),
            f"{ns}/optimizer_steps": float(opt["steps"]),
            "tokens/queries_len_mean": float(batch.query_lengths.float().mean()),
            "tokens/responses_len_mean": float(mask.sum(1).mean()),
        }
    )
    if opt["grad_norm"] is not None:
        stats[f"{ns}/grad_norm"] = opt["grad_norm"]
    return stats
