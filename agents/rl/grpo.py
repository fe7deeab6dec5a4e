"""The GRPO family as one critic-free learner: GRPO, Dr. GRPO, DAPO and GSPO are options.

The trainer samples ``G`` answers per query, consecutively (``samples_per_query = G``).
On the skeleton of :mod:`agents.rl.base` the learner supplies:

- **advantages**: each answer's reward ``R_i`` (the task score; with ``kl_in="reward"``,
  minus ``kl_coef * sum_t KL_t`` as PPO's) minus its group's mean, scaled by
  ``scale_rewards`` (:func:`agents.rl.group_maths.group_advantages`), broadcast to its tokens;
  groups whose scores are all equal and (optionally) truncated answers are counted and,
  with ``drop_uniform_groups`` / ``mask_truncated``, left out of the optimisation;
- **loss**: the clipped surrogate over ``ppo_epochs`` passes of mini-batches against the
  rollout policy's log-probs (:func:`agents.rl.group_maths.grpo_surrogate`: clip-higher, dual
  clip, token or sequence ratio), plus ``kl_beta`` times a per-token KL estimate to the
  reference (``kl_in="loss"``), aggregated by ``loss_aggregation``.

Defaults are GRPO as published (DeepSeekMath, Shao et al. 2024): group std scaling, the
per-answer token mean, symmetric clip, token ratios, ``kl_beta = 0.04`` with k3 in the loss.
The KL sits in the loss by default because there it weighs ``kl_beta`` in every group:
folded into the reward it is divided by each group's reward std like the scores (a group
with near-equal scores gets its KL noise blown up to unit advantages) and a group of equal
scores is no longer uniform, so it would never be dropped. With ``kl_beta = 0`` the
opening runs no reference forward at all and ``objective/kl`` is NaN (not measured).

No value head is used (``uses_values = False``); the run builds none for this learner.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
import torch

from .batch import TokenBatch
from .config import LearnerConfig
from .group_maths import (
    IMPORTANCE_SAMPLING,
    KL_LOSS_ESTIMATORS,
    LOSS_AGGREGATIONS,
    REWARD_SCALES,
    aggregate_loss,
    group_advantages,
    grpo_surrogate,
    kl_loss_term,
    uniform_groups,
)
from .grouped import GroupLearner
from .kl_control import make_kl_controller
from .maths import masked_mean
from .passes import Rollout

__all__ = ["GRPOLearner", "GRPOOptions", "make_grpo_learner", "truncated_rows"]


@dataclass
class GRPOOptions:
    """The options of :class:`GRPOLearner` (the shared ones, e.g. ``cliprange`` as eps_low,
    are :class:`agents.rl.config.LearnerConfig`'s); defaults: GRPO as published."""

    scale_rewards: str = "group"
    """``group`` (GRPO), ``batch`` (Liu et al. 2025) or ``none`` (Dr. GRPO); default group."""
    loss_aggregation: str = "seq-mean-token-mean"
    """``token-mean`` (DAPO), ``seq-mean-token-mean`` (GRPO) or ``seq-mean-token-sum-norm``
    (Dr. GRPO); default seq-mean-token-mean."""
    cliprange_high: float | None = None
    """eps_high of clip-higher (DAPO: 0.28); default None: ``cliprange``."""
    dual_clip: float | None = None
    """Dual-clip constant c > 1 for negative advantages (Ye et al. 2020); default None: off."""
    importance_sampling: str = "token"
    """``token`` (GRPO) or ``sequence`` (GSPO, Zheng et al. 2025); default token."""
    kl_beta: float = 0.04
    """KL coefficient (DeepSeekMath: 0.04); 0: no KL, no reference forward; default 0.04."""
    kl_estimator: str = "k3"
    """Per-token KL of the loss term: ``k1``, ``k2``, ``k3`` (GRPO); default k3."""
    kl_in: str = "loss"
    """``loss`` (GRPO) or ``reward`` (folded into the per-token reward with the KL controller
    starting at ``kl_beta``, as PPO; Ziegler et al. 2019); default loss."""
    drop_uniform_groups: bool = False
    """Leave groups of equal scores out of the loss, counted (DAPO); default False."""
    mask_truncated: bool = False
    """Leave answers truncated without EOS out of the loss (DAPO); default False."""

    def __post_init__(self) -> None:
        for name, allowed in (
            ("scale_rewards", REWARD_SCALES),
            ("loss_aggregation", LOSS_AGGREGATIONS),
            ("importance_sampling", IMPORTANCE_SAMPLING),
            ("kl_estimator", KL_LOSS_ESTIMATORS),
            ("kl_in", ("loss", "reward")),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"{name} must be one of {tuple(allowed)}, got {getattr(self, name)!r}"
                )
        if not (np.isfinite(self.kl_beta) and self.kl_beta >= 0):
            raise ValueError(f"kl_beta must be a finite number >= 0, got {self.kl_beta!r}")
        if self.cliprange_high is not None and not (
            np.isfinite(self.cliprange_high) and self.cliprange_high > 0
        ):
            raise ValueError(
                f"cliprange_high must be a finite number > 0 or None, got {self.cliprange_high!r}"
            )
        if self.dual_clip is not None and not (np.isfinite(self.dual_clip) and self.dual_clip > 1):
            raise ValueError(
                f"dual_clip must be a finite number > 1 or None, got {self.dual_clip!r}"
            )


def truncated_rows(batch: TokenBatch, eos_token_id: int | None) -> torch.Tensor:
    """``(N,)`` bool: the answers whose last token is not EOS (exact for tasks without stop
    strings; the trainers pass the env's own flags instead)."""
    if eos_token_id is None:
        raise ValueError(
            "mask_truncated needs the env's truncation flags (update(..., truncated=)) "
            "or an agent whose tokenizer has an EOS token"
        )
    lengths = batch.response_mask.sum(1).long()
    last = batch.response_ids.gather(1, (lengths - 1).clamp(min=0)[:, None]).squeeze(1)
    return last != eos_token_id


class GRPOLearner(GroupLearner):
    """Group-relative, critic-free policy optimisation (a ``Learner``); see the module docstring.

    ``max_answer_length``: Dr. GRPO's constant (the trainers pass the run's
    ``max_new_tokens``); None: each mini-batch's longest answer."""

    name = "grpo"
    uses_values = False

    def __init__(
        self,
        agent: Any,
        config: LearnerConfig | None = None,
        group_size: int = 4,
        *,
        options: GRPOOptions | None = None,
        max_answer_length: int | None = None,
        **kwargs: Any,
    ) -> None:
        """``kwargs``: :class:`GRPOOptions` fields (overriding ``options``') and the
        skeleton's ``optimizer``, ``lr_scheduler`` and ``world``."""
        names = {f.name for f in fields(GRPOOptions)}
        option_fields = {k: v for k, v in kwargs.items() if k in names}
        self.options = opts = replace(options or GRPOOptions(), **option_fields)
        super().__init__(
            agent, config, group_size, **{k: v for k, v in kwargs.items() if k not in names}
        )
        self.max_answer_length = max_answer_length
        self.uses_reference = opts.kl_beta > 0
        self.kl_in_reward = opts.kl_in == "reward"
        if self.kl_in_reward:  # as PPO's, starting at kl_beta
            cfg = self.config
            self.kl_ctl = make_kl_controller(
                cfg.adap_kl_ctrl, opts.kl_beta, cfg.target, cfg.horizon
            )

    def advantages(self, batch: TokenBatch, rollout: Rollout) -> dict[str, torch.Tensor]:
        """The group advantages and the rows to train on; ``rollout.truncated`` (the env's
        flags, given to ``update``) or else those answers not ending in EOS are the truncated."""
        opts, g = self.options, self.group_size
        rewards = rollout.rewards.sum(1)  # the score, minus kl_coef * sequence KL with kl_in=reward
        adv = group_advantages(rewards, g, opts.scale_rewards)
        uniform = uniform_groups(rollout.scores, g)
        truncated = rollout.truncated
        if truncated is None:
            eos = getattr(getattr(self.agent, "tokenizer", None), "eos_token_id", None)
            if eos is not None or opts.mask_truncated:
                truncated = truncated_rows(batch, eos)
        keep = torch.ones(len(batch), dtype=torch.bool, device=batch.device)
        if opts.drop_uniform_groups:
            keep &= ~uniform.repeat_interleave(g)
        if opts.mask_truncated:
            assert truncated is not None  # set above: the env's flags or the rows without EOS
            keep &= ~truncated
        flags = {} if truncated is None else {"truncated": truncated}
        return {"advantages": adv, "rewards": rewards, "uniform": uniform, "keep": keep, **flags}

    def train_rows(
        self, batch: TokenBatch, rollout: Rollout, targets: dict[str, torch.Tensor]
    ) -> torch.Tensor | None:
        keep = targets["keep"]
        return None if bool(keep.all()) else torch.nonzero(keep).squeeze(1)

    def loss(
        self, sub: TokenBatch, idx: torch.Tensor, rollout: Rollout, targets: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        opts, cfg, t = self.options, self.config, sub.response_ids.shape[1]
        mask = sub.response_mask.float()
        out = rollout.forward(sub, idx)
        logp = out.logprobs.float()
        token_loss, ps = grpo_surrogate(
            logp,
            rollout.old_logprobs[idx, :t],
            targets["advantages"][idx],
            mask,
            cfg.cliprange,
            opts.cliprange_high,
            opts.dual_clip,
            opts.importance_sampling,
        )
        agg = lambda x: aggregate_loss(x, mask, opts.loss_aggregation, self.max_answer_length)  # noqa: E731
        stats = {f"policy/{k}": v for k, v in ps.items()}
        stats["policy/entropy"] = masked_mean(out.entropy.detach(), mask)
        policy = agg(token_loss)
        loss = policy
        if self.uses_reference and not self.kl_in_reward:
            assert rollout.ref_logprobs is not None  # the reference pass ran
            kl = kl_loss_term(logp, rollout.ref_logprobs[idx, :t], mask, opts.kl_estimator)
            kl_loss = agg(kl)
            loss = policy + opts.kl_beta * kl_loss
            stats.update({"policy/kl": masked_mean(kl.detach(), mask), "loss/kl": kl_loss.detach()})
        stats.update({"loss/policy": policy.detach(), "loss/total": loss.detach()})
        return loss, stats

    def extra_stats(
        self, batch: TokenBatch, rollout: Rollout, targets: dict[str, torch.Tensor], opt: dict
    ) -> dict[str, float]:
        g, rewards, adv = self.group_size, targets["rewards"], targets["advantages"]
        lengths = rollout.mask.sum(1)
        keep, uniform, truncated = targets["keep"], targets["uniform"], targets.get("truncated")
        stats = {} if truncated is None else {"grpo/truncated": float(truncated.float().mean())}
        return {
            **stats,
            "grpo/kl_beta": self.options.kl_beta,
            "grpo/reward/mean": float(rewards.mean()),
            "grpo/reward/group_std": float(rewards.reshape(-1, g).std(1).mean()),
            "grpo/advantage/mean": float(adv.mean()),
            "grpo/advantage/std": float(adv.std()) if len(adv) > 1 else 0.0,
            "grpo/uniform_groups": float(uniform.float().mean()),
            "grpo/trained_fraction": float(keep.float().mean()),
            "grpo/length/mean": float(lengths.mean()),
            "grpo/length/max": float(lengths.max()),
        }


make_grpo_learner = GRPOLearner.build
"""The ``grpo`` registry factory: ``group_size=``, ``config=``, :class:`GRPOOptions` fields
(``options=`` or one by one), ``max_answer_length=``, ``world=`` and :class:`LearnerConfig` fields."""
