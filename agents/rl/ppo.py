"""``PPOLearner``: token-level PPO with a value head, as in the paper and TRL 0.7.

On the skeleton of :mod:`agents.rl.base` it supplies only its targets and its loss:

- targets: GAE over the response tokens on the per-token rewards (optionally whitened,
  scale only, first), returns ``= advantages + values``, advantages whitened over the batch
  (:func:`agents.rl.maths.compute_gae`);
- loss: the clipped surrogate plus ``vf_coef`` times the clipped value loss
  (:mod:`agents.rl.losses`).
"""

from __future__ import annotations

import torch

from .base import LearnerBase
from .batch import TokenBatch
from .losses import policy_loss, value_loss
from .maths import compute_gae, masked_mean, masked_var, masked_whiten
from .passes import Rollout

__all__ = ["PPOLearner"]


class PPOLearner(LearnerBase):
    """Token-level PPO on one agent (a :class:`agents.rl.learner.Learner`); see
    :class:`agents.rl.base.LearnerBase` for what the agent must provide and what the
    learner's state holds."""

    name = "ppo"

    def advantages(self, batch: TokenBatch, rollout: Rollout) -> dict[str, torch.Tensor]:
        cfg, mask, rewards = self.config, rollout.mask, rollout.rewards
        assert rollout.values is not None, "PPO's rollout holds the value head's values"
        if cfg.whiten_rewards:
            rewards = masked_whiten(rewards, mask, shift_mean=False)
        advantages, returns = compute_gae(rollout.values, rewards, mask, cfg.gamma, cfg.lam)
        return {"advantages": advantages, "returns": returns}

    def loss(
        self, sub: TokenBatch, idx: torch.Tensor, rollout: Rollout, targets: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cfg, t = self.config, sub.response_ids.shape[1]
        sub_mask = sub.response_mask.float()
        out = rollout.forward(sub, idx)
        assert rollout.values is not None
        pg, ps = policy_loss(
            out.logprobs.float(),
            rollout.old_logprobs[idx, :t],
            targets["advantages"][idx, :t],
            sub_mask,
            cfg.cliprange,
            entropy=out.entropy,
        )
        vf, vs = value_loss(
            out.values.float(),
            rollout.values[idx, :t],
            targets["returns"][idx, :t],
            sub_mask,
            cfg.cliprange_value,
        )
        loss = pg + cfg.vf_coef * vf
        stats = {f"policy/{k}": v for k, v in ps.items()}
        stats.update({f"val/{k}": v for k, v in vs.items()})
        stats.update(
            {"loss/policy": pg.detach(), "loss/value": vf.detach(), "loss/total": loss.detach()}
        )
        return loss, stats

    def extra_stats(
        self, batch: TokenBatch, rollout: Rollout, targets: dict[str, torch.Tensor], opt: dict
    ) -> dict[str, float]:
        mask, returns, values = rollout.mask, targets["returns"], rollout.values
        assert values is not None
        returns_var = float(masked_var(returns, mask))
        error = opt["minibatch"]["val/error"]
        return {
            "ppo/returns/mean": float(masked_mean(returns, mask)),
            "ppo/returns/var": returns_var,
            "ppo/val/mean": float(masked_mean(values, mask)),
            "ppo/val/var": float(masked_var(values, mask)),
            "ppo/val/var_explained": 1.0 - error / returns_var if returns_var > 0 else 0.0,
        }
