"""RLOO: critic-free, group-relative policy optimisation (Ahmadian et al. 2024, "Back to Basics").

The trainer samples ``k`` responses per query, consecutively: rows ``i*k .. i*k + k-1`` of
the batch answer query ``i`` (``samples_per_query = k``). Each response is one action:

- its reward is the task score minus the KL penalty of the whole sequence,
  ``R_i = score_i - kl_coef * sum_t KL_t`` (:func:`agents.ppo.compute_rewards` summed over
  the response, so every KL estimator of :mod:`agents.ppo` works, ``full`` included);
- its advantage is ``R_i`` minus the mean of the *other* ``k - 1`` rewards of its group
  (:func:`rloo_advantages`): an unbiased baseline with no value network;
- the loss is PPO's clipped surrogate (:func:`agents.ppo.policy_loss`) **per token**, with
  the sequence advantage broadcast to every token of the response and the mean taken over
  all real tokens of the mini-batch. Its gradient at ratio 1 is
  ``-(1/#tokens) * sum_i A_i * grad log pi(y_i | x_i)``, the RLOO estimator up to a constant
  factor; so one epoch on one mini-batch is exactly REINFORCE with the leave-one-out
  baseline, and ``ppo_epochs > 1`` / several mini-batches reuse the samples under the clip
  as in PPO / GRPO. (TRL's ``RLOOTrainer`` clips the *sequence* ratio instead, a product
  over tokens that leaves ``[1-c, 1+c]`` quickly on long answers; GRPO clips per token too
  but averages per sequence first, which weights the tokens of short answers more.)

In CORY the observer's ``k`` samples of one query have different prompts (each holds its
own pioneer answer). The leave-one-out baseline stays unbiased there (the other samples
do not depend on this sample's answer); it is only a looser baseline.

Config: the :class:`agents.ppo.PPOConfig` fields that apply to a critic-free learner are
honoured (``learning_rate``, ``mini_batch_size``, ``gradient_accumulation_steps``,
``ppo_epochs``, ``cliprange``, the KL controller fields, ``kl_penalty``, the score
processing fields, ``max_grad_norm``, ``target_kl``, ``ratio_threshold``, ``seed``);
``gamma``, ``lam``, ``cliprange_value``, ``vf_coef`` and ``whiten_rewards`` are ignored.
The value head is never used: the default optimiser holds all of
``agent.trainable_parameters()`` (value head included, as PPO's does), but the loss does
not depend on the values, so the value head's gradients stay ``None`` and Adam never
updates it (nor keeps state for it).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import torch

from .batch import TokenBatch
from .ppo import (
    LearnerBase,
    PPOConfig,
    compute_rewards,
    masked_mean,
    optimise,
    policy_loss,
    process_scores,
)

__all__ = ["RLOOLearner", "check_group_size", "make_rloo_learner", "rloo_advantages"]


def check_group_size(n: int, k: int) -> None:
    """Raise ``ValueError`` unless ``k >= 2`` is an int and ``n > 0`` is a multiple of ``k``."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise ValueError(f"k (samples per query) must be an int, got {k!r}")
    if k < 2:
        raise ValueError(f"RLOO needs k >= 2 samples per query for a leave-one-out baseline, got k={k}")
    if n <= 0 or n % k:
        raise ValueError(
            f"RLOO needs the batch to hold groups of k={k} consecutive samples per query; "
            f"got {n} trajectories, not a positive multiple of {k}"
        )


def rloo_advantages(rewards: torch.Tensor, k: int) -> torch.Tensor:
    """Leave-one-out advantages of ``rewards`` ``(N,)`` grouped in ``N/k`` runs of ``k``.

    ``A_i = R_i - mean_{j != i in group(i)} R_j = k/(k-1) * (R_i - mean_group)``.
    """
    rewards = torch.as_tensor(rewards)
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D (N,), got shape {tuple(rewards.shape)}")
    check_group_size(rewards.shape[0], k)
    groups = rewards.reshape(-1, k)
    baseline = (groups.sum(1, keepdim=True) - groups) / (k - 1)
    return (groups - baseline).reshape(-1)


class RLOOLearner(LearnerBase):
    """REINFORCE leave-one-out with a PPO-style clipped, multi-epoch update (a ``Learner``).

    ``agent`` needs ``forward(batch, with_logits=False)`` (``logprobs``, ``entropy`` and,
    for the ``full`` estimator, ``logits``; with grad), ``ref_logprobs(batch, full=False)``
    and ``trainable_parameters()``. The learner owns the optimiser, the KL controller, the
    running score moments and a private shuffling generator; :meth:`state_dict` holds
    exactly those.
    """

    def __init__(
        self,
        agent: Any,
        config: PPOConfig | None = None,
        k: int = 4,
        *,
        optimizer: torch.optim.Optimizer | None = None,
        lr_scheduler: Any | None = None,
    ) -> None:
        check_group_size(k, k)
        self.samples_per_query = int(k)
        super().__init__(agent, config, optimizer, lr_scheduler)

    @property
    def k(self) -> int:
        return self.samples_per_query

    def update(self, batch: TokenBatch, scores: np.ndarray | torch.Tensor) -> dict[str, float]:
        """One RLOO update on ``batch`` (``N/k`` groups of ``k`` consecutive samples of the
        same query) with per-trajectory ``scores`` ``(N,)``; returns namespaced stats."""
        cfg, k = self.config, self.samples_per_query
        n, device = len(batch), batch.device
        check_group_size(n, k)
        raw_scores = self._scores(scores, n, device)
        scores_t = process_scores(raw_scores, self.running, cfg.use_score_scaling, cfg.use_score_norm, cfg.score_clip)
        mask = batch.response_mask.float()

        old_lp, _, ref_lp, full_kls = self._rollout_pass(batch, with_values=False)
        kl_coef = self.kl_ctl.value
        token_rewards, non_score, kls = compute_rewards(
            scores_t, old_lp, ref_lp, mask, kl_coef, cfg.kl_penalty, kls=full_kls
        )
        rewards = token_rewards.sum(1)  # score - kl_coef * sequence KL
        adv = rloo_advantages(rewards, k)
        advantages = adv[:, None] * mask  # the sequence advantage on every real token

        def minibatch_loss(sub: TokenBatch, idx: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            t = sub.response_ids.shape[1]
            out = self.agent.forward(sub)
            loss, ps = policy_loss(
                out.logprobs.float(), old_lp[idx, :t], advantages[idx, :t],
                sub.response_mask.float(), cfg.cliprange, entropy=out.entropy,
            )
            return loss, {**{f"policy/{name}": v for name, v in ps.items()}, "loss/policy": loss.detach()}

        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        opt = optimise(self, batch, minibatch_loss, params, "RLOO")

        with torch.no_grad():
            mean_kl = float(kls.sum(1).mean())
            group_std = rewards.reshape(-1, k).std(1)
            stats = {f"rloo/{name}": v for name, v in opt["minibatch"].items()}
            stats.update({
                "objective/kl": mean_kl,
                "objective/kl_coef": kl_coef,
                "objective/entropy": float((-old_lp * mask).sum(1).mean()),
                "objective/ref_logprobs": float(masked_mean(ref_lp, mask)),
                "objective/logprobs": float(masked_mean(old_lp, mask)),
                "rloo/reward/mean": float(rewards.mean()),
                "rloo/reward/group_std": float(group_std.mean()),
                "rloo/reward/zero_std_groups": float((group_std == 0).float().mean()),
                "rloo/advantage/mean": float(adv.mean()),
                "rloo/advantage/std": float(adv.std()),
                "rloo/advantage/abs_max": float(adv.abs().max()),
                "rloo/learning_rate": opt["learning_rate"],
                "rloo/epochs": float(opt["epochs"]),
                "rloo/early_stop": float(opt["early_stop"]),
                "rloo/skipped_minibatches": float(opt["skipped"]),
                "ppo/mean_non_score_reward": float(masked_mean(non_score, mask)),
                "ppo/mean_scores": float(scores_t.mean()),
                "ppo/std_scores": float(scores_t.std()),
                "env/reward_mean": float(raw_scores.mean()),
                "env/reward_std": float(raw_scores.std()),
                "tokens/queries_len_mean": float(batch.query_lengths.float().mean()),
                "tokens/responses_len_mean": float(mask.sum(1).mean()),
            })
            if opt["grad_norm"] is not None:
                stats["rloo/grad_norm"] = opt["grad_norm"]
        self.kl_ctl.update(mean_kl, n)
        self.num_updates += 1
        return stats

    def state_dict(self) -> dict[str, Any]:
        """``k``, then :meth:`agents.ppo.LearnerBase.state_dict` (not the weights)."""
        return {"k": self.samples_per_query, **super().state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state.get("k", self.samples_per_query)) != self.samples_per_query:
            raise ValueError(f"state saved with k={state['k']}, this learner has k={self.samples_per_query}")
        super().load_state_dict(state)


def make_rloo_learner(
    agent: Any,
    *,
    config: PPOConfig | None = None,
    k: int = 4,
    optimizer: torch.optim.Optimizer | None = None,
    lr_scheduler: Any | None = None,
    **cfg: Any,
) -> RLOOLearner:
    """The ``rloo`` registry factory: ``cfg`` are :class:`PPOConfig` fields (overriding
    those of ``config`` when both are given)."""
    config = replace(config, **cfg) if config is not None else PPOConfig(**cfg)
    return RLOOLearner(agent, config, k, optimizer=optimizer, lr_scheduler=lr_scheduler)
