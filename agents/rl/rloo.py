"""RLOO: critic-free, group-relative policy optimisation (Ahmadian et al. 2024, "Back to Basics").

The trainer samples ``k`` responses per query, consecutively: rows ``i*k .. i*k + k-1`` of
the batch answer query ``i`` (``samples_per_query = k``). Each response is one action:

- its reward is the task score minus the KL penalty of the whole sequence,
  ``R_i = score_i - kl_coef * sum_t KL_t`` (the skeleton's per-token rewards summed over
  the response, so every KL estimator of :mod:`agents.rl.maths` works, ``full`` included);
- its advantage is ``R_i`` minus the mean of the *other* ``k - 1`` rewards of its group
  (:func:`rloo_advantages`): an unbiased baseline with no value network;
- the loss is PPO's clipped surrogate (:func:`agents.rl.losses.policy_loss`) **per token**,
  with the sequence advantage broadcast to every token of the response and the mean taken
  over all real tokens of the mini-batch. Its gradient at ratio 1 is
  ``-(1/#tokens) * sum_i A_i * grad log pi(y_i | x_i)``, the RLOO estimator up to a constant
  factor; so one epoch on one mini-batch is exactly REINFORCE with the leave-one-out
  baseline, and ``ppo_epochs > 1`` / several mini-batches reuse the samples under the clip
  as in PPO / GRPO. (TRL's ``RLOOTrainer`` clips the *sequence* ratio instead, a product
  over tokens that leaves ``[1-c, 1+c]`` quickly on long answers; GRPO clips per token too
  but averages per sequence first, which weights the tokens of short answers more.)

In CORY the observer's ``k`` samples of one query have different prompts (each holds its
own pioneer answer). The leave-one-out baseline stays unbiased there (the other samples
do not depend on this sample's answer); it is only a looser baseline.

Config: the :class:`agents.rl.config.LearnerConfig` fields that apply to a critic-free learner
are honoured (``learning_rate``, ``mini_batch_size``, ``gradient_accumulation_steps``,
``ppo_epochs``, ``cliprange``, the KL controller fields, ``kl_penalty``, the score
processing fields, ``max_grad_norm``, ``target_kl``, ``ratio_threshold``, ``seed``);
``gamma``, ``lam``, ``cliprange_value``, ``vf_coef`` and ``whiten_rewards`` are ignored.
The value head is never used: the default optimiser holds all of
``agent.trainable_parameters()`` (value head included, as PPO's does), but the loss does
not depend on the values, so the value head's gradients stay ``None`` and Adam never
updates it (nor keeps state for it).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .base import LearnerBase, Rollout
from .batch import TokenBatch
from .config import LearnerConfig
from .losses import policy_loss

__all__ = ["RLOOLearner", "check_group_size", "make_rloo_learner", "rloo_advantages"]


def check_group_size(n: int, k: int, learner: str = "RLOO") -> None:
    """Raise ``ValueError`` unless ``k >= 2`` is an int and ``n > 0`` is a multiple of ``k``
    (``learner`` names the group learner in the message)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise ValueError(f"k (samples per query, --group-size) must be an int, got {k!r}")
    if k < 2:
        raise ValueError(f"{learner} needs k >= 2 samples per query (--group-size) for a group "
                         f"baseline, got k={k}")
    if n <= 0 or n % k:
        raise ValueError(
            f"{learner} needs the batch to hold groups of k={k} consecutive samples per query; "
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
    """REINFORCE leave-one-out with a PPO-style clipped, multi-epoch update (a ``Learner``)."""

    name = "rloo"
    uses_values = False

    def __init__(
        self,
        agent: Any,
        config: LearnerConfig | None = None,
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

    def check_batch(self, batch: TokenBatch) -> None:
        check_group_size(len(batch), self.samples_per_query)

    def advantages(self, batch: TokenBatch, rollout: Rollout) -> dict[str, torch.Tensor]:
        rewards = rollout.rewards.sum(1)  # score - kl_coef * sequence KL
        adv = rloo_advantages(rewards, self.samples_per_query)
        # the sequence advantage on every real token
        return {"advantages": adv[:, None] * rollout.mask, "sequence": adv, "rewards": rewards}

    def loss(
        self, sub: TokenBatch, idx: torch.Tensor, rollout: Rollout, targets: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        t = sub.response_ids.shape[1]
        out = self.policy_forward(sub, idx)
        loss, ps = policy_loss(
            out.logprobs.float(), rollout.old_logprobs[idx, :t], targets["advantages"][idx, :t],
            sub.response_mask.float(), self.config.cliprange, entropy=out.entropy,
        )
        return loss, {**{f"policy/{name}": v for name, v in ps.items()}, "loss/policy": loss.detach()}

    def extra_stats(
        self, batch: TokenBatch, rollout: Rollout, targets: dict[str, torch.Tensor], opt: dict
    ) -> dict[str, float]:
        rewards, adv = targets["rewards"], targets["sequence"]
        group_std = rewards.reshape(-1, self.samples_per_query).std(1)
        return {
            "rloo/reward/mean": float(rewards.mean()),
            "rloo/reward/group_std": float(group_std.mean()),
            "rloo/reward/zero_std_groups": float((group_std == 0).float().mean()),
            "rloo/advantage/mean": float(adv.mean()),
            "rloo/advantage/std": float(adv.std()),
            "rloo/advantage/abs_max": float(adv.abs().max()),
        }

    def state_dict(self) -> dict[str, Any]:
        """``k``, then :meth:`agents.rl.base.LearnerBase.state_dict` (not the weights)."""
        return {"k": self.samples_per_query, **super().state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state.get("k", self.samples_per_query)) != self.samples_per_query:
            raise ValueError(f"state saved with k={state['k']}, this learner has k={self.samples_per_query}")
        super().load_state_dict(state)


make_rloo_learner = RLOOLearner.build
"""The ``rloo`` registry factory: ``k=``, ``config=``, and :class:`LearnerConfig` fields."""
