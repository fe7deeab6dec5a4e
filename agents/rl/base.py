"""The learner skeleton: what every learner of :mod:`agents.rl` does, written once.

:meth:`LearnerBase.update` is the whole algorithm but two steps:

1. **opening** (shared): validate the scores, process them (:mod:`agents.rl.scores`), run
   the no-grad pass for the old log-probs, values and reference log-probs
   (:mod:`agents.rl.passes`; fused with the first forward, :mod:`agents.rl.fused`; shared
   across processes, :mod:`agents.rl.parallel`), and build the per-token rewards
   ``-kl_coef * KL_t`` plus the score at the last token (:func:`agents.rl.maths.compute_rewards`);
2. ``advantages(batch, rollout)`` — **the learner's**: its targets (PPO: GAE; RLOO: the
   leave-one-out baseline);
3. **optimisation** (shared, :func:`agents.rl.optimise.optimise`) of ``loss(sub, idx,
   rollout, targets)`` — **the learner's**, which gets the policy's output from
   ``rollout.forward(sub, idx)`` — over epochs of mini-batches;
4. **ending** (shared): the statistics every learner reports, then the learner's own
   (``extra_stats``), the KL controller update and the update count.

A learner subclass sets ``name`` (its metric namespace), ``uses_values`` (whether the
no-grad pass computes values) and implements ``advantages`` and ``loss``. Optional:
``uses_reference`` False (no reference forward at all), ``kl_in_reward`` False (no KL in
the rewards, no KL controller update), ``train_rows`` (optimise on some rows only),
``check_batch`` and ``extra_stats``. Everything one update needs lives in its
:class:`Rollout`; the learner's fields hold only what lasts across updates.
"""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any

import numpy as np
import torch

from agents.distributed import SINGLE, World, full_state, load_full_state

from .adam import default_adam
from .batch import TokenBatch
from .config import LearnerConfig
from .fused import PolicyForward, fused_pass, fused_rows
from .kl_control import make_kl_controller
from .maths import compute_rewards
from .optimise import optimise, skip_optimisation
from .parallel import sharded_pass
from .passes import Passes, Rollout, rollout_pass
from .scores import RunningMoments, per_trajectory, process_scores
from .stats import shared_stats

__all__ = ["LearnerBase", "Rollout", "rollout_pass"]


class LearnerBase:
    """The shared skeleton of a learner (a :class:`agents.rl.learner.Learner`).

    ``agent`` must provide ``forward(batch, with_logits=False)`` (an output with
    ``logprobs``, ``values``, ``entropy``, ``logits`` fields, response-aligned, with grad),
    ``ref_logprobs(batch, full=False)`` (no grad) and ``trainable_parameters()``.

    The learner owns the optimiser, the KL controller, the running score moments and a
    private generator for shuffling; :meth:`state_dict` holds exactly those (the weights
    are the agent's). Like torch's, the returned state shares tensors with the live
    optimiser: ``torch.save`` it or ``copy.deepcopy`` it to take a snapshot. ``world``: the
    processes of a data-parallel run (:mod:`agents.distributed`), given at construction.
    """

    name: str = "learner"
    """Namespace of the learner's own metrics (``ppo/...``, ``rloo/...``)."""
    uses_values: bool = True
    """Whether the no-grad pass computes the value head's predictions."""
    uses_reference: bool = True
    """Whether the opening runs the reference (False: no KL is measured, ``objective/kl`` NaN)."""
    kl_in_reward: bool = True
    """Whether the rewards carry ``-kl_coef * KL_t`` and the KL controller adapts."""
    samples_per_query: int = 1
    """Responses the trainer samples per query (see :mod:`agents.rl.learner`)."""
    samples_groups: bool = False
    """Whether the learner samples a group of ``group_size`` answers per query (RLOO, GRPO)."""
    fuse_first_forward: bool = True
    """Whether the first mini-batch's forward with grad also gives its rows' old log-probs
    and values where that applies (:mod:`agents.rl.fused`; on one process)."""

    def __init__(
        self,
        agent: Any,
        config: LearnerConfig | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        lr_scheduler: Any | None = None,
        *,
        world: World = SINGLE,
    ) -> None:
        if self.uses_values and getattr(agent, "value_head", True) is None:
            raise ValueError(
                f"the {self.name} learner needs a value head; this agent was built "
                "without one (value_head=False)"
            )
        self.agent = agent
        self.world = world
        self.config = config = config if config is not None else LearnerConfig()
        self.optimizer = optimizer or default_adam(
            agent.trainable_parameters(), config.learning_rate
        )
        self.lr_scheduler = lr_scheduler
        self.kl_ctl = make_kl_controller(
            config.adap_kl_ctrl, config.init_kl_coef, config.target, config.horizon
        )
        self.running = RunningMoments()
        self.generator = torch.Generator().manual_seed(config.seed)
        self.num_updates = 0

    @classmethod
    def build(
        cls, agent: Any, *, config: LearnerConfig | None = None, **kwargs: Any
    ) -> LearnerBase:
        """The registry factory: ``kwargs`` that are :class:`LearnerConfig` fields override
        ``config``'s; the others go to the constructor (e.g. ``group_size``, ``world``,
        ``optimizer``)."""
        names = {f.name for f in fields(LearnerConfig)}
        cfg = {k: v for k, v in kwargs.items() if k in names}
        extra = {k: v for k, v in kwargs.items() if k not in names}
        config = replace(config, **cfg) if config is not None else LearnerConfig(**cfg)
        return cls(agent, config, **extra)

    # ------------------------------------------------------------------ what a learner supplies

    def check_batch(self, batch: TokenBatch) -> None:
        """Refuse a batch this learner cannot train on (e.g. groups of the wrong size)."""

    def advantages(self, batch: TokenBatch, rollout: Rollout) -> dict[str, torch.Tensor]:
        """The learner's targets (at least ``advantages`` ``(N, T)``), detached."""
        raise NotImplementedError

    def loss(
        self, sub: TokenBatch, idx: torch.Tensor, rollout: Rollout, targets: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss of the mini-batch ``sub`` (rows ``idx`` of the batch) and its detached
        stats (``policy/ratio`` and ``policy/approxkl`` included); the policy's output on
        ``sub`` is ``rollout.forward(sub, idx)``."""
        raise NotImplementedError

    def extra_stats(
        self, batch: TokenBatch, rollout: Rollout, targets: dict[str, torch.Tensor], opt: dict
    ) -> dict[str, float]:
        """The learner's own statistics of an update (beyond the shared ones)."""
        return {}

    def train_rows(
        self, batch: TokenBatch, rollout: Rollout, targets: dict[str, torch.Tensor]
    ) -> torch.Tensor | None:
        """The rows to optimise on (None: all); the others are out of the loss and of the
        mini-batches, as if the batch did not hold them (GRPO: uniform groups)."""
        return None

    # ------------------------------------------------------------------ the skeleton

    def update(
        self,
        batch: TokenBatch,
        scores: np.ndarray | torch.Tensor,
        *,
        truncated: np.ndarray | torch.Tensor | None = None,
        token_budget: int | None = None,
    ) -> dict[str, float]:
        """One update on ``batch`` with per-trajectory ``scores`` ``(N,)`` (``truncated``
        ``(N,)``: the env's flags of the answers it cut, for a learner that reads them from
        ``rollout.truncated``; ``token_budget``: at most this many padded tokens per
        micro-batch in this update, see :meth:`LearnerConfig.within_budget`); returns stats."""
        self.check_batch(batch)
        config = self.config.within_budget(token_budget)
        rollout = self._open(batch, scores, truncated, config)
        targets = self.advantages(batch, rollout)
        opt = self._optimise(batch, rollout, targets, config)
        rollout.policy.release()
        with torch.no_grad():
            stats = shared_stats(self.name, batch, rollout, opt)
            stats.update(self.extra_stats(batch, rollout, targets, opt))
        if self.kl_in_reward and self.uses_reference:
            self.kl_ctl.update(stats["objective/kl"], len(batch))
        self.num_updates += 1
        return stats

    def _optimise(
        self,
        batch: TokenBatch,
        rollout: Rollout,
        targets: dict[str, torch.Tensor],
        config: LearnerConfig,
    ) -> dict[str, Any]:
        rows = self.train_rows(batch, rollout, targets)
        if rows is not None and len(rows) == 0:  # nothing to learn from: no epoch, no step
            return skip_optimisation(self.optimizer, self.lr_scheduler)

        def loss(
            sub: TokenBatch, idx: torch.Tensor
        ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            # ``idx`` indexes the rows trained on; the rollout and targets hold the whole batch
            return self.loss(sub, idx if rows is None else rows[idx], rollout, targets)

        if rows is not None:
            batch = batch.subset(rows)
        return optimise(
            config, self.optimizer, self.generator, batch, loss, self.lr_scheduler, self.world
        )

    def _open(
        self,
        batch: TokenBatch,
        scores: np.ndarray | torch.Tensor,
        truncated: np.ndarray | torch.Tensor | None,
        config: LearnerConfig,
    ) -> Rollout:
        cfg, n = config, len(batch)
        raw = per_trajectory(scores, n, batch.device)
        flags = (
            None
            if truncated is None
            else per_trajectory(truncated, n, batch.device, "truncated").bool()
        )
        processed = process_scores(
            raw, self.running, cfg.use_score_scaling, cfg.use_score_norm, cfg.score_clip
        )
        mask = batch.response_mask.float()
        (old_lp, values, ref_lp, full_kls), policy = self._passes(batch, cfg)
        kl_coef = self.kl_ctl.value if self.kl_in_reward else 0.0
        if ref_lp is None:  # no reference: the rewards are the scores alone
            kl_coef, kls = 0.0, None
            rewards, non_score, _ = compute_rewards(
                processed, old_lp, old_lp, mask, 0.0, "kl", kls=torch.zeros_like(mask)
            )
        else:
            rewards, non_score, kls = compute_rewards(
                processed, old_lp, ref_lp, mask, kl_coef, cfg.kl_penalty, kls=full_kls
            )
        return Rollout(
            mask,
            raw,
            processed,
            old_lp,
            values,
            ref_lp,
            rewards,
            non_score,
            kls,
            kl_coef,
            policy=policy,
            truncated=flags,
        )

    def _passes(self, batch: TokenBatch, cfg: LearnerConfig) -> tuple[Passes, PolicyForward]:
        """The opening's no-grad pass: fused with the first forward where that applies, else
        whole (shared across the processes of a data-parallel run)."""
        args = (cfg.mini_batch_size, cfg.kl_penalty, self.uses_values, self.uses_reference)
        if self.fuse_first_forward and not self.world.parallel:
            every_row = type(self).train_rows is LearnerBase.train_rows  # mini-batches known now
            rows = fused_rows(cfg, self.generator, batch, every_row)
            if rows is not None:
                return fused_pass(self.agent, batch, rows, *args)
        return sharded_pass(self.agent, batch, self.world, *args), PolicyForward(self.agent)

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """Optimiser, KL controller, score moments, shuffling generator (not the weights)."""
        return {
            # sharded moments gathered whole
            "optimizer": full_state(self.optimizer.state_dict(), self.world),
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
        load_full_state(self.optimizer, self.world)
        self.kl_ctl.load_state_dict(state["kl_ctl"])
        self.running.load_state_dict(state["running"])
        self.generator.set_state(state["generator"].clone())
        if self.lr_scheduler is not None and state.get("lr_scheduler") is not None:
            self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        self.num_updates = int(state.get("num_updates", 0))
