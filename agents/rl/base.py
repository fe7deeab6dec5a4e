"""The learner skeleton: what every learner of :mod:`agents.rl` does, written once.

:meth:`LearnerBase.update` is the whole algorithm but two steps:

1. **opening** (shared): validate the scores, process them (:mod:`agents.rl.scores`), run
   the no-grad pass for the old log-probs, values and reference log-probs
   (:func:`rollout_pass`), and build the per-token rewards ``-kl_coef * KL_t`` plus the
   score at the last token (:func:`agents.rl.maths.compute_rewards`);
2. ``advantages(rollout)`` — **the learner's**: its targets (PPO: GAE; RLOO: the
   leave-one-out baseline);
3. **optimisation** (shared, :func:`agents.rl.optimise.optimise`) of ``loss(sub, idx,
   rollout, targets)`` — **the learner's** — over epochs of mini-batches;
4. **ending** (shared): the statistics every learner reports, then the learner's own
   (``extra_stats``), the KL controller update and the update count.

A learner subclass sets ``name`` (its metric namespace), ``uses_values`` (whether the
no-grad pass computes values) and implements ``advantages`` and ``loss``. Optional:
``uses_reference`` False (no reference forward at all), ``kl_in_reward`` False (no KL in
the rewards, no KL controller update), ``train_rows`` (optimise on some rows only),
``check_batch`` and ``extra_stats``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from agents.distributed import SINGLE, World, full_state, gather_rows, load_full_state, share

from .adam import default_adam
from .batch import TokenBatch
from .config import LearnerConfig
from .kl_control import make_kl_controller
from .maths import compute_rewards, kl_penalty, logprobs_from_logits, masked_mean, zero_pad
from .optimise import first_minibatch, fits_budget, micro_batches, optimise
from .scores import RunningMoments, process_scores

__all__ = ["LearnerBase", "Rollout", "rollout_pass"]


@torch.no_grad()
def rollout_pass(
    agent: Any, batch: TokenBatch, chunk: int, estimator: str, with_values: bool = True,
    with_reference: bool = True, with_policy: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """Old log-probs, values (None unless ``with_values``), ref log-probs (None unless
    ``with_reference``: then the reference never runs) and (for the ``full`` estimator, else
    None) per-token KLs of ``batch``, ``chunk`` rows at a time; each ``(N, T)`` float32, zero
    on padding. ``with_policy`` False: the reference alone (old log-probs and values zero)."""
    n, t_len = batch.response_ids.shape
    full = estimator == "full" and with_reference
    old_lp, values, ref_lp, kls = (torch.zeros(n, t_len, device=batch.device) for _ in range(4))
    for start in range(0, n, chunk):
        idx = torch.arange(start, min(start + chunk, n), device=batch.device)
        sub = batch.subset(idx)
        t = sub.response_ids.shape[1]
        if with_policy:
            out = agent.forward(sub, with_logits=full)
            old_lp[idx, :t] = out.logprobs.detach().float()
            if with_values:
                values[idx, :t] = out.values.detach().float()
        if not with_reference:
            continue
        ref = agent.ref_logprobs(sub, full=full)
        if full:
            if out.logits is None:
                raise ValueError(
                    "the 'full' KL estimator needs agent.forward(with_logits=True) logits"
                )
            full_ref = ref.float()
            kls[idx, :t] = kl_penalty(F.log_softmax(out.logits.float(), dim=-1), full_ref, "full")
            ref = logprobs_from_logits(full_ref, sub.response_ids)  # already normalised
        ref_lp[idx, :t] = ref.float()
    mask = batch.response_mask
    old_lp, values, ref_lp, kls = (zero_pad(x, mask) for x in (old_lp, values, ref_lp, kls))
    return (old_lp, (values if with_values else None), (ref_lp if with_reference else None),
            (kls if full else None))


@dataclass
class Rollout:
    """What the shared opening of an update computed; per-token tensors are ``(N, T)``,
    float32, zero on padding."""

    mask: torch.Tensor
    raw_scores: torch.Tensor
    """``(N,)`` the scores as given."""
    scores: torch.Tensor
    """``(N,)`` after score scaling / normalisation / clipping."""
    old_logprobs: torch.Tensor
    values: torch.Tensor | None
    """The rollout policy's values (None for a learner without a critic)."""
    ref_logprobs: torch.Tensor | None
    """None when the learner runs no reference (``uses_reference`` False)."""
    rewards: torch.Tensor
    """``-kl_coef * KL_t``, plus the score at each response's last token."""
    non_score_rewards: torch.Tensor
    kls: torch.Tensor | None
    """The per-token KL estimate (``kl_penalty``); None without a reference."""
    kl_coef: float
    """The coefficient in ``rewards`` (0 when the KL is not in the reward)."""


class LearnerBase:
    """The shared skeleton of a learner (a :class:`agents.rl.learner.Learner`).

    ``agent`` must provide ``forward(batch, with_logits=False)`` (an output with
    ``logprobs``, ``values``, ``entropy``, ``logits`` fields, response-aligned, with grad),
    ``ref_logprobs(batch, full=False)`` (no grad) and ``trainable_parameters()``.

    The learner owns the optimiser, the KL controller, the running score moments and a
    private generator for shuffling; :meth:`state_dict` holds exactly those (the weights
    are the agent's). Like torch's, the returned state shares tensors with the live
    optimiser: ``torch.save`` it or ``copy.deepcopy`` it to take a snapshot.
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
    fuse_first_forward: bool = True
    """The first epoch's first mini-batch runs on the policy as it was before the update, so
    its forward with grad is also the rollout's: its detached log-probs and values are those
    rows' old ones, and the no-grad pass runs the policy on the other rows only (none when
    one mini-batch is the whole batch), after the reference and before that forward (one
    mini-batch's policy forward fewer per update, the same numbers; tested). A mini-batch
    over the micro-batch token budget: its first micro-batch is the fused forward. Where it
    applies: one process, the ``kl`` / ``abs`` / ``mse`` estimators, and, for a mini-batch
    smaller than the batch or cut by the token budget, a learner that trains on every row
    (no :meth:`train_rows` of its own: its first mini-batch is then known before the update
    starts)."""
    world: World = SINGLE
    """The processes of a data-parallel run (:mod:`agents.distributed`): each holds the whole
    batch; the no-grad pass and every mini-batch are split across them."""

    def __init__(
        self,
        agent: Any,
        config: LearnerConfig | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        lr_scheduler: Any | None = None,
    ) -> None:
        if self.uses_values and getattr(agent, "value_head", True) is None:
            raise ValueError(f"the {self.name} learner needs a value head; this agent was built "
                             "without one (value_head=False)")
        self.agent = agent
        self.config = config = config if config is not None else LearnerConfig()
        self.optimizer = optimizer or default_adam(agent.trainable_parameters(), config.learning_rate)
        self.lr_scheduler = lr_scheduler
        self.kl_ctl = make_kl_controller(
            config.adap_kl_ctrl, config.init_kl_coef, config.target, config.horizon
        )
        self.running = RunningMoments()
        self.generator = torch.Generator().manual_seed(config.seed)
        self.num_updates = 0

    @classmethod
    def build(
        cls,
        agent: Any,
        *,
        config: LearnerConfig | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        lr_scheduler: Any | None = None,
        **kwargs: Any,
    ) -> LearnerBase:
        """The registry factory: ``kwargs`` that are :class:`LearnerConfig` fields override
        ``config``'s; the others go to the constructor (e.g. RLOO's ``k``)."""
        names = {f.name for f in fields(LearnerConfig)}
        cfg = {k: v for k, v in kwargs.items() if k in names}
        extra = {k: v for k, v in kwargs.items() if k not in names}
        config = replace(config, **cfg) if config is not None else LearnerConfig(**cfg)
        return cls(agent, config, optimizer=optimizer, lr_scheduler=lr_scheduler, **extra)

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
        stats (``policy/ratio`` and ``policy/approxkl`` included)."""
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

    def update(self, batch: TokenBatch, scores: np.ndarray | torch.Tensor) -> dict[str, float]:
        """One update on ``batch`` with per-trajectory ``scores`` ``(N,)``; returns stats."""
        self.check_batch(batch)
        self._fuse = self._fused_rows(batch)
        try:
            rollout = self._open(batch, scores)
            targets = self.advantages(batch, rollout)
            opt = self._optimise(batch, rollout, targets)
        finally:
            self._fuse, self._fused = None, None
        with torch.no_grad():
            stats = self._stats(batch, rollout, opt)
            stats.update(self.extra_stats(batch, rollout, targets, opt))
        if self.kl_in_reward and self.uses_reference:
            self.kl_ctl.update(stats["objective/kl"], len(batch))
        self.num_updates += 1
        return stats

    def _optimise(self, batch: TokenBatch, rollout: Rollout, targets: dict[str, torch.Tensor]) -> dict:
        rows = self.train_rows(batch, rollout, targets)
        cfg, loss = self.config, lambda sub, idx: self.loss(sub, idx, rollout, targets)
        w = self.world
        if rows is None:
            return optimise(cfg, self.optimizer, self.generator, batch, loss, self.lr_scheduler, w)
        if len(rows) == 0:  # nothing to learn from: no epoch, no step (the scheduler still steps)
            cfg = copy.copy(cfg)
            cfg.ppo_epochs = 0
            return optimise(cfg, self.optimizer, self.generator, batch, loss, self.lr_scheduler, w)
        return optimise(cfg, self.optimizer, self.generator, batch.subset(rows),
                        lambda sub, idx: loss(sub, rows[idx]), self.lr_scheduler, w)

    def _open(self, batch: TokenBatch, scores: np.ndarray | torch.Tensor) -> Rollout:
        cfg, n = self.config, len(batch)
        raw = self._scores(scores, n, batch.device)
        processed = process_scores(
            raw, self.running, cfg.use_score_scaling, cfg.use_score_norm, cfg.score_clip
        )
        mask = batch.response_mask.float()
        old_lp, values, ref_lp, full_kls = self._rollout_pass(batch)
        kl_coef = self.kl_ctl.value if self.kl_in_reward else 0.0
        if ref_lp is None:  # no reference: the rewards are the scores alone
            kl_coef, kls = 0.0, None
            rewards, non_score, _ = compute_rewards(
                processed, old_lp, old_lp, mask, 0.0, "kl", kls=torch.zeros_like(mask))
        else:
            rewards, non_score, kls = compute_rewards(
                processed, old_lp, ref_lp, mask, kl_coef, cfg.kl_penalty, kls=full_kls
            )
        return Rollout(mask, raw, processed, old_lp, values, ref_lp, rewards, non_score, kls, kl_coef)

    _fuse: torch.Tensor | None = None
    """Set by :meth:`update` for one update: the rows whose first forward is fused (None: none)."""
    _fused: Any = None

    def _fused_rows(self, batch: TokenBatch) -> torch.Tensor | None:
        """The rows of ``batch`` whose forward with grad gives the old log-probs and values
        (``fuse_first_forward``): the first mini-batch's (its first micro-batch's where the
        token budget cuts it), or None where fusing does not apply."""
        cfg, n = self.config, len(batch)
        if not (self.fuse_first_forward and cfg.ppo_epochs > 0 and not self.world.parallel
                and cfg.kl_penalty != "full"):
            return None
        every_row = type(self).train_rows is LearnerBase.train_rows  # the mini-batches known now
        if every_row:
            rows = first_minibatch(cfg, self.generator, n)
        elif cfg.mini_batch_size >= n:
            rows = torch.arange(n)
        else:
            return None
        rows, budget = rows.to(batch.device), cfg.max_tokens_per_microbatch
        if fits_budget(batch, rows, budget):
            return rows
        return micro_batches(batch, rows, budget)[0] if every_row else None  # its first piece

    def policy_forward(self, sub: TokenBatch, idx: torch.Tensor) -> Any:
        """The policy's output on the mini-batch ``sub`` (rows ``idx`` of the batch), with
        grad: a learner's ``loss`` calls this. The first call of a fused update (see
        ``fuse_first_forward``) takes its rows from the forward the old log-probs came from
        (when they are among that forward's; else it runs its own)."""
        fused, self._fused = self._fused, None
        if fused is None:
            return self.agent.forward(sub)
        rows, out = fused
        same = idx.unsqueeze(1) == rows.unsqueeze(0)  # (len(idx), len(rows))
        if not bool(same.any(1).all()):
            return self.agent.forward(sub)
        at, t = same.int().argmax(1), sub.response_ids.shape[1]
        pick = lambda x: None if x is None else x[at, :t]  # noqa: E731
        return type(out)(pick(out.logprobs), pick(out.values), pick(out.entropy))

    def _rollout_pass(self, batch: TokenBatch):
        """:func:`rollout_pass` on the batch; data-parallel, each process runs its contiguous
        share of the rows and the results are gathered (the batch's rows divide evenly).
        Fused (``fuse_first_forward``): the reference's pass runs alone, then the policy's
        no-grad pass on the rows outside the first mini-batch, then that mini-batch's forward
        (with grad, kept for the first loss), whose detached rows are its old log-probs and
        values (the other passes' activations and the fused graph are never held at once)."""
        cfg, w = self.config, self.world
        args = (cfg.mini_batch_size, cfg.kl_penalty, self.uses_values, self.uses_reference)
        if self._fuse is not None:
            rows = self._fuse
            _, _, ref_lp, kls = rollout_pass(self.agent, batch, *args, with_policy=False)
            old_lp = torch.zeros(batch.response_ids.shape, device=batch.device)
            values = torch.zeros_like(old_lp) if self.uses_values else None
            rest = torch.ones(len(batch), dtype=torch.bool, device=batch.device)
            rest[rows] = False
            rest = rest.nonzero().flatten()
            if len(rest):  # the other rows' old log-probs and values: the no-grad pass
                lp, v, _, _ = rollout_pass(self.agent, batch.subset(rest), cfg.mini_batch_size, cfg.kl_penalty,
                                           self.uses_values, with_reference=False)
                old_lp[rest, : lp.shape[1]] = lp
                if values is not None:
                    values[rest, : v.shape[1]] = v
            out = self.agent.forward(batch.subset(rows))  # with grad: the first loss reuses it
            self._fused = (rows, out)
            t = out.logprobs.shape[1]
            old_lp[rows, :t] = out.logprobs.detach().float()
            if values is not None:
                values[rows, :t] = out.values.detach().float()
            mask = batch.response_mask
            return zero_pad(old_lp, mask), (zero_pad(values, mask) if values is not None else None), ref_lp, kls
        if not w.parallel or len(batch) % w.size:
            return rollout_pass(self.agent, batch, *args)
        local = batch.subset(share(torch.arange(len(batch), device=batch.device), w))
        t_len = batch.response_ids.shape[1]
        parts = rollout_pass(self.agent, local, *args)
        return tuple(None if x is None else gather_rows(F.pad(x, (0, t_len - x.shape[1])), w)
                     for x in parts)

    def _stats(self, batch: TokenBatch, ro: Rollout, opt: dict[str, Any]) -> dict[str, float]:
        """The statistics every learner reports (TRL's names where TRL has one)."""
        ns, n, mask, nan = self.name, len(batch), ro.mask, float("nan")
        stats = {f"{ns}/{k}": v for k, v in opt["minibatch"].items()}
        stats.update({
            "objective/kl": float(ro.kls.sum(1).mean()) if ro.kls is not None else nan,
            "objective/kl_coef": ro.kl_coef,
            "objective/entropy": float((-ro.old_logprobs * mask).sum(1).mean()),
            "objective/ref_logprobs": float(masked_mean(ro.ref_logprobs, mask))
            if ro.ref_logprobs is not None else nan,
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
        })
        if opt["grad_norm"] is not None:
            stats[f"{ns}/grad_norm"] = opt["grad_norm"]
        return stats

    @staticmethod
    def _scores(scores: np.ndarray | torch.Tensor, n: int, device: torch.device) -> torch.Tensor:
        s = torch.as_tensor(np.asarray(scores) if not torch.is_tensor(scores) else scores)
        s = s.detach().to(device=device, dtype=torch.float32).reshape(-1)
        if s.numel() != n:
            raise ValueError(f"got {s.numel()} scores for a batch of {n} trajectories")
        if not bool(torch.isfinite(s).all()):
            raise ValueError("scores must be finite")
        return s

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """Optimiser, KL controller, score moments, shuffling generator (not the weights)."""
        return {
            "optimizer": full_state(self.optimizer.state_dict(), self.world),  # sharded moments whole
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
