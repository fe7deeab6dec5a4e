"""RLOO: critic-free, group-relative policy optimisation (Ahmadian et al. 2024, "Back to Basics").

The trainer samples ``G = group_size`` responses per query, consecutively: rows
``i*G .. i*G + G-1`` of the batch answer query ``i`` (``samples_per_query = G``). Each
response is one action:

- its reward is the task score minus the KL penalty of the whole sequence,
  ``R_i = score_i - kl_coef * sum_t KL_t`` (the skeleton's per-token rewards summed over
  the response, so every KL estimator of :mod:`agents.rl.maths` works, ``full`` included);
- its advantage is ``R_i`` minus the mean of the *other* ``G - 1`` rewards of its group
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

In CORY the observer's ``G`` samples of one query have different prompts (each holds its
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

import torch

from .batch import TokenBatch
from .grouped import GroupLearner, check_group_size
from .losses import policy_loss
from .passes import Rollout

__all__ = ["RLOOLearner", "check_group_size", "make_rloo_learner", "rloo_advantages"]


def rloo_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """Leave-one-out advantages of ``rewards`` ``(N,)`` grouped in ``N/G`` runs of
    ``G = group_size``.

    ``A_i = R_i - mean_{j != i in group(i)} R_j = G/(G-1) * (R_i - mean_group)``.
    """
    rewards = torch.as_tensor(rewards)
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D (N,), got shape {tuple(rewards.shape)}")
    check_group_size(rewards.shape[0], group_size)
    groups = rewards.reshape(-1, group_size)
    baseline = (groups.sum(1, keepdim=True) - groups) / (group_size - 1)
    return (groups - baseline).reshape(-1)


class RLOOLearner(GroupLearner):
    """REINFORCE leave-one-out with a PPO-style clipped, multi-epoch update (a ``Learner``):
    ``RLOOLearner(agent, config=None, group_size=4, *, optimizer, lr_scheduler, world)``."""

    name = "rloo"
    uses_values = False

    def advantages(self, batch: TokenBatch, rollout: Rollout) -> dict[str, torch.Tensor]:
        rewards = rollout.rewards.sum(1)  # score - kl_coef * sequence KL
        adv = rloo_advantages(rewards, self.group_size)
        # the sequence advantage on every real token
        return {"advantages": adv[:, None] * rollout.mask, "sequence": adv, "rewards": rewards}

    def loss(
        self, sub: TokenBatch, idx: torch.Tensor, rollout: Rollout, targets: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        t = sub.response_ids.shape[1]
        out = rollout.forward(sub, idx)
        loss, ps = policy_loss(
            out.logprobs.float(),
            rollout.old_logprobs[idx, :t],
            targets["advantages"][idx, :t],
            sub.response_mask.float(),
            self.config.cliprange,
            entropy=out.entropy,
        )
        return loss, {
            **{f"policy/{name}": v for name, v in ps.items()},
            "loss/policy": loss.detach(),
        }

    def extra_stats(
        self, batch: TokenBatch, rollout: Rollout, targets: dict[str, torch.Tensor], opt: dict
    ) -> dict[str, float]:
        rewards, adv = targets["rewards"], targets["sequence"]
        group_std = rewards.reshape(-1, self.group_size).std(1)
        return {
            "rloo/reward/mean": float(rewards.mean()),
            "rloo/reward/group_std": float(group_std.mean()),
            "rloo/reward/zero_std_groups": float((group_std == 0).float().mean()),
            "rloo/advantage/mean": float(adv.mean()),
            "rloo/advantage/std": float(adv.std()),
            "rloo/advantage/abs_max": float(adv.abs().max()),
        }


make_rloo_learner = RLOOLearner.build
"""The ``rloo`` registry factory: ``group_size=``, ``config=``, ``world=``, and
:class:`agents.rl.config.LearnerConfig` fields."""
