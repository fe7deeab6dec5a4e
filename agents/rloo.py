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

import warnings
from collections import defaultdict
from dataclasses import replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .batch import TokenBatch
from .ppo import (
    AdaptiveKLController,
    FixedKLController,
    PPOConfig,
    RunningMoments,
    compute_rewards,
    kl_penalty,
    logprobs_from_logits,
    masked_mean,
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


class RLOOLearner:
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
        self.agent = agent
        self.samples_per_query = int(k)
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

    @property
    def k(self) -> int:
        return self.samples_per_query

    @torch.no_grad()
    def _rollout_pass(self, batch: TokenBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Old log-probs, ref log-probs and (``full`` estimator) per-token KLs, chunk by chunk."""
        n, t_len = batch.response_ids.shape
        full = self.config.kl_penalty == "full"
        old_lp, ref_lp, kls = (torch.zeros(n, t_len, device=batch.device) for _ in range(3))
        for start in range(0, n, self.config.mini_batch_size):
            idx = torch.arange(start, min(start + self.config.mini_batch_size, n), device=batch.device)
            sub = batch.subset(idx)
            t = sub.response_ids.shape[1]
            out = self.agent.forward(sub, with_logits=full)
            ref = self.agent.ref_logprobs(sub, full=full)
            if full:
                if out.logits is None:
                    raise ValueError("the 'full' KL estimator needs agent.forward(with_logits=True) logits")
                full_ref = ref.float()
                kls[idx, :t] = kl_penalty(F.log_softmax(out.logits.float(), dim=-1), full_ref, "full")
                ref = logprobs_from_logits(full_ref, sub.response_ids)
            old_lp[idx, :t] = out.logprobs.detach().float()
            ref_lp[idx, :t] = ref.float()
        mask = batch.response_mask != 0
        zero = torch.zeros((), device=batch.device)
        old_lp, ref_lp = torch.where(mask, old_lp, zero), torch.where(mask, ref_lp, zero)
        return old_lp, ref_lp, (kls if full else None)

    def _scores(self, scores: np.ndarray | torch.Tensor, n: int, device: torch.device) -> torch.Tensor:
        s = scores.detach() if torch.is_tensor(scores) else torch.as_tensor(np.asarray(scores))
        s = s.to(device=device, dtype=torch.float32).reshape(-1)
        if s.numel() != n:
            raise ValueError(f"got {s.numel()} scores for a batch of {n} trajectories")
        if not bool(torch.isfinite(s).all()):
            raise ValueError("scores must be finite")
        return s

    def update(self, batch: TokenBatch, scores: np.ndarray | torch.Tensor) -> dict[str, float]:
        """One RLOO update on ``batch`` (``N/k`` groups of ``k`` consecutive samples of the
        same query) with per-trajectory ``scores`` ``(N,)``; returns namespaced stats."""
        cfg, k = self.config, self.samples_per_query
        n, device = len(batch), batch.device
        check_group_size(n, k)
        raw_scores = self._scores(scores, n, device)
        scores_t = process_scores(raw_scores, self.running, cfg.use_score_scaling, cfg.use_score_norm, cfg.score_clip)
        mask = batch.response_mask.float()

        old_lp, ref_lp, full_kls = self._rollout_pass(batch)
        kl_coef = self.kl_ctl.value
        token_rewards, non_score, kls = compute_rewards(
            scores_t, old_lp, ref_lp, mask, kl_coef, cfg.kl_penalty, kls=full_kls
        )
        rewards = token_rewards.sum(1)  # score - kl_coef * sequence KL
        adv = rloo_advantages(rewards, k)
        advantages = adv[:, None] * mask  # the sequence advantage on every real token

        lr = float(self.optimizer.param_groups[0]["lr"])
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        mb = min(cfg.mini_batch_size, n)
        backward_bs = mb * cfg.gradient_accumulation_steps
        mb_stats: dict[str, list[torch.Tensor]] = defaultdict(list)
        grad_norms: list[torch.Tensor] = []
        epochs, early_stop, skipped = 0, False, 0
        for _ in range(cfg.ppo_epochs):
            perm = torch.randperm(n, generator=self.generator).to(device)
            epoch_kl: list[torch.Tensor] = []
            for b_start in range(0, n, backward_bs):
                b_idx = perm[b_start : b_start + backward_bs]
                self.optimizer.zero_grad(set_to_none=True)
                stepped = False
                for m_start in range(0, len(b_idx), mb):
                    idx = b_idx[m_start : m_start + mb]
                    sub = batch.subset(idx)
                    t = sub.response_ids.shape[1]
                    out = self.agent.forward(sub)
                    loss, ps = policy_loss(
                        out.logprobs.float(), old_lp[idx, :t], advantages[idx, :t],
                        sub.response_mask.float(), cfg.cliprange, entropy=out.entropy,
                    )
                    for name, v in ps.items():
                        mb_stats[f"policy/{name}"].append(v)
                    mb_stats["loss/policy"].append(loss.detach())
                    epoch_kl.append(ps["approxkl"])
                    if float(ps["ratio"]) > cfg.ratio_threshold:
                        warnings.warn(
                            f"RLOO: mean ratio {float(ps['ratio']):.2f} > ratio_threshold "
                            f"{cfg.ratio_threshold}; skipping this mini-batch",
                            stacklevel=2,
                        )
                        skipped += 1
                        continue
                    (loss * (len(idx) / len(b_idx))).backward()
                    stepped = True
                if stepped:
                    if cfg.max_grad_norm is not None:
                        grad_norms.append(torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm).detach())
                    self.optimizer.step()
            epochs += 1
            if cfg.target_kl is not None and float(torch.stack(epoch_kl).mean()) > 1.5 * cfg.target_kl:
                early_stop = True
                break
        self.optimizer.zero_grad(set_to_none=True)
        if self.lr_scheduler is not None:
            self.lr_scheduler.step()

        with torch.no_grad():
            mean_kl = float(kls.sum(1).mean())
            group_std = rewards.reshape(-1, k).std(1)
            stats = {f"rloo/{name}": float(torch.stack(v).mean()) for name, v in mb_stats.items()}
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
                "rloo/learning_rate": lr,
                "rloo/epochs": float(epochs),
                "rloo/early_stop": float(early_stop),
                "rloo/skipped_minibatches": float(skipped),
                "ppo/mean_non_score_reward": float(masked_mean(non_score, mask)),
                "ppo/mean_scores": float(scores_t.mean()),
                "ppo/std_scores": float(scores_t.std()),
                "env/reward_mean": float(raw_scores.mean()),
                "env/reward_std": float(raw_scores.std()),
                "tokens/queries_len_mean": float(batch.query_lengths.float().mean()),
                "tokens/responses_len_mean": float(mask.sum(1).mean()),
            })
            if grad_norms:
                stats["rloo/grad_norm"] = float(torch.stack(grad_norms).mean())
        self.kl_ctl.update(mean_kl, n)
        self.num_updates += 1
        return stats

    def state_dict(self) -> dict[str, Any]:
        """Optimiser, KL controller, score moments, shuffling generator (not the weights)."""
        return {
            "k": self.samples_per_query,
            "optimizer": self.optimizer.state_dict(),
            "kl_ctl": self.kl_ctl.state_dict(),
            "running": self.running.state_dict(),
            "generator": self.generator.get_state(),
            "lr_scheduler": self.lr_scheduler.state_dict() if self.lr_scheduler is not None else None,
            "num_updates": self.num_updates,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state.get("k", self.samples_per_query)) != self.samples_per_query:
            raise ValueError(f"state saved with k={state['k']}, this learner has k={self.samples_per_query}")
        self.optimizer.load_state_dict(state["optimizer"])
        self.kl_ctl.load_state_dict(state["kl_ctl"])
        self.running.load_state_dict(state["running"])
        self.generator.set_state(state["generator"].clone())
        if self.lr_scheduler is not None and state.get("lr_scheduler") is not None:
            self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        self.num_updates = int(state.get("num_updates", 0))


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
