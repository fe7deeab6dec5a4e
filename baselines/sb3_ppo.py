"""stable-baselines3 PPO on the single-agent Gymnasium view: bring your own algorithm.

:class:`LMActorCriticPolicy` is an SB3 ``ActorCriticPolicy`` whose actor *is* a Hugging
Face causal LM: the logits at the last real position of the observation (found from its
``attention_mask``) are the Categorical action distribution over the vocabulary, and a
linear value head on the final hidden state at that position gives the value (zero at
start, and LoRA adapters on every linear layer: both from :mod:`agents.policy.construction`,
as :class:`agents.policy.agent.LLMAgent`'s). SB3's
features extractor and MLP are not used; SB3's own ``PPO`` class collects the rollouts
(one env step = one token) and runs its clipped-surrogate update unchanged.

What this is: **plain SB3 PPO on the task reward** of the pioneer role
(:class:`cory_env.wrappers.PioneerEnv`), with SB3's per-step GAE, advantage
normalisation and value loss. There is no KL penalty to a frozen reference model (unlike
:mod:`baselines.ppo`, the paper's RLHF-style baseline), so nothing keeps the policy near
the original model except the clip range and a small learning rate.

Cost: SB3's policy sees one observation at a time, so a rollout step re-runs the LM over
the whole prompt-plus-answer-so-far (no KV cache), and the update scores token steps, not
sequences. The update recovers part of that: observations of a mini-batch that are
prefixes of another one (steps of the same episode) share its forward pass. See
``bench/sb3_vs_ppo.py`` for the speed against :class:`baselines.ppo.SingleAgentTrainer`.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.distributions import CategoricalDistribution, Distribution
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.policies import ActorCriticPolicy
from torch import nn

from agents.policy.construction import hidden_size, with_lora, zero_value_head
from agents.policy.loading import autocast
from cory_env.wrappers import PioneerEnv

Obs = dict[str, torch.Tensor]


class LMActorCriticPolicy(ActorCriticPolicy):
    """An SB3 actor-critic whose policy is a causal LM's next-token distribution.

    Built by SB3 as ``policy_class(observation_space, action_space, lr_schedule, **policy_kwargs)``;
    pass ``policy_kwargs={"lm": model}`` (an ``nn.Module`` returning ``.logits``, e.g. a
    Hugging Face ``*ForCausalLM``, possibly a PEFT model). The optimiser holds the LM's
    trainable parameters (all of them, or only a LoRA adapter's) plus the value head, at
    ``lr_schedule(1)``; SB3 updates the learning rate from the schedule as it trains.

    The observation must be ``{"input_ids": (B, L), "attention_mask": (B, L)}``,
    right-padded; its tensors are cast to ``long`` whatever SB3 hands over (int tensors
    from the env and SB3 2.x's buffers, float ones where a buffer or wrapper converts).
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule,
        lm: nn.Module,
        dtype: str = "fp32",
        share_prefixes: bool = True,
        **kwargs: Any,
    ) -> None:
        if not isinstance(action_space, spaces.Discrete):
            raise TypeError(f"the action space must be Discrete (token ids), got {action_space}")
        if not isinstance(observation_space, spaces.Dict) or {"input_ids", "attention_mask"} - set(
            observation_space.spaces
        ):
            raise TypeError("the observation space must be a Dict with input_ids and attention_mask")
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)  # _build: no-op
        self.lm = lm
        self.dtype = dtype
        self.value_head = zero_value_head(hidden_size(lm)).to(_device_of(lm))  # as LLMAgent's
        self.share_prefixes = share_prefixes
        self._gather_logits = True  # logits_to_keep=(R, K) positions; off if the model lacks it
        self.optimizer = self.optimizer_class(
            [p for p in self.parameters() if p.requires_grad], lr=lr_schedule(1), **self.optimizer_kwargs
        )

    def _build(self, lr_schedule) -> None:
        """SB3's MLP extractor / action net / optimiser are replaced by the LM (``__init__``)."""

    def set_training_mode(self, mode: bool) -> None:
        """As SB3's, but the LM stays in eval mode: dropout off, so a rollout's log-probs are
        reproduced exactly in the update (ratio 1 before the first step), as in RLHF."""
        super().set_training_mode(mode)
        self.lm.eval()

    # --- the LM as actor and critic

    def lm_outputs(self, obs: Obs) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits ``(B, V)`` (float32) at each observation's last real token and the values ``(B,)``.

        Observations that are prefixes of another one in the batch (earlier steps of the same
        episode, as in SB3's update mini-batches) are read off that one's forward pass: a
        causal LM's outputs at a position depend only on the tokens up to it.
        """
        ids, mask = obs["input_ids"].long(), obs["attention_mask"].long()
        if ids.dim() == 1:
            ids, mask = ids[None], mask[None]
        positions = torch.arange(mask.shape[1], device=mask.device)
        last = (mask * positions).argmax(dim=1)  # 0 for an all-padding row
        root, slot = _prefix_roots(ids, last) if self.share_prefixes else (None, None)
        if root is None:  # every row runs
            root = torch.arange(len(ids), device=ids.device)
            slot = torch.zeros_like(root)
            run = root
        else:
            run, root = torch.unique(root, return_inverse=True)  # root: row -> index into run
        ids, mask, run_last = ids[run], mask[run], last[run]
        width = int(run_last.max()) + 1
        ids, mask = ids[:, :width], mask[:, :width].clone()
        mask[:, 0] = torch.where(mask.sum(1) == 0, 1, mask[:, 0])  # no fully-masked rows
        logits = None
        if self._gather_logits:  # project only the needed positions onto the vocabulary
            keep = run_last[:, None].repeat(1, int(slot.max()) + 1)  # (R, K) positions
            keep[root, slot] = last
            with contextlib.suppress(TypeError):  # TypeError: the model takes no logits_to_keep
                logits, hidden = self._run_lm(ids, mask, keep=keep)
            if logits is None or logits.shape[:2] != keep.shape or hidden.shape[:2] != keep.shape:
                self._gather_logits, logits = False, None
            else:
                logits, hidden = logits[root, slot], hidden[root, slot]
        if logits is None:
            logits, hidden = self._run_lm(ids, mask)
            logits, hidden = logits[root, last], hidden[root, last]
        values = self.value_head(hidden.to(self.value_head.weight.dtype)).squeeze(-1)
        return logits.float(), values

    def _run_lm(self, ids: torch.Tensor, mask: torch.Tensor, keep: torch.Tensor | None = None):
        """The LM's logits and the input of its output layer (the final hidden states)."""
        captured: list[torch.Tensor] = []
        head = self.lm.get_output_embeddings()
        hook = head.register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
        extra = {} if keep is None else {"logits_to_keep": keep}
        try:
            with autocast(self.dtype, ids.device):
                out = self.lm(input_ids=ids, attention_mask=mask, use_cache=False, **extra)
        finally:
            hook.remove()
        return out.logits, captured[-1]

    def _dist(self, logits: torch.Tensor) -> Distribution:
        assert isinstance(self.action_dist, CategoricalDistribution)
        return self.action_dist.proba_distribution(action_logits=logits)

    # --- what SB3 calls

    def forward(self, obs: Obs, deterministic: bool = False):
        logits, values = self.lm_outputs(obs)
        dist = self._dist(logits)
        actions = dist.get_actions(deterministic=deterministic)
        return actions, values[:, None], dist.log_prob(actions)

    def evaluate_actions(self, obs: Obs, actions: torch.Tensor):
        logits, values = self.lm_outputs(obs)
        dist = self._dist(logits)
        return values[:, None], dist.log_prob(actions.long().flatten()), dist.entropy()

    def get_distribution(self, obs: Obs) -> Distribution:
        return self._dist(self.lm_outputs(obs)[0])

    def predict_values(self, obs: Obs) -> torch.Tensor:
        return self.lm_outputs(obs)[1][:, None]

    def _predict(self, observation: Obs, deterministic: bool = False) -> torch.Tensor:
        return self.get_distribution(observation).get_actions(deterministic=deterministic)


def _prefix_roots(ids: torch.Tensor, last: torch.Tensor, max_rows: int = 1024):
    """For each row, the row whose forward pass gives its outputs and its slot there.

    ``root[i]`` is the longest row (ties: the smallest index) of which row ``i`` is a
    prefix, itself included; ``slot[i]`` numbers the rows sharing a root. ``(None, None)``
    when every row is its own root or the batch is too large to compare all pairs.
    """
    n, width = last + 1, int(last.max()) + 1
    if len(ids) < 2 or len(ids) > max_rows:
        return None, None
    ids = ids[:, :width]
    inside = torch.arange(width, device=ids.device)[None, :] < n[:, None]  # (B, W) row i's tokens
    same = ((ids[:, None, :] == ids[None, :, :]) | ~inside[:, None, :]).all(-1)  # j starts with i
    extends = same & (n[None, :] >= n[:, None])
    rows = torch.arange(len(ids), device=ids.device)
    key = torch.where(extends, n[None, :] * len(ids) + (len(ids) - 1 - rows)[None, :], -1)
    root = key.argmax(dim=1)
    if bool((root == rows).all()):
        return None, None
    order = torch.argsort(root, stable=True)
    counts = torch.bincount(root, minlength=len(ids))
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.empty_like(root)
    slot[order] = rows - starts[root[order]]
    return root, slot


def _device_of(lm: nn.Module) -> torch.device:
    return next(lm.parameters()).device


def make_sb3_ppo(
    model: nn.Module,
    tokenizer: Any,
    task: Any = "sentiment",
    max_new_tokens: int | None = None,
    n_steps: int = 64,
    batch_size: int = 32,
    learning_rate: float = 1e-5,
    seed: int = 0,
    *,
    n_envs: int = 1,
    n_epochs: int = 4,
    lora_r: int | None = None,
    lora_alpha: int | None = None,
    dtype: str = "fp32",
    ppo_kwargs: dict[str, Any] | None = None,
    **env_kwargs: Any,
) -> PPO:
    """An SB3 ``PPO`` training ``model`` on ``PioneerEnv(task=task, tokenizer=tokenizer, ...)``.

    ``max_new_tokens=None``: the task's default. ``n_steps`` tokens per env per rollout,
    ``n_envs`` envs (a ``DummyVecEnv`` with ``Monitor``, so ``ep_info_buffer`` holds episode
    rewards), mini-batches of ``batch_size`` tokens, ``n_epochs`` passes. ``lora_r``: train a LoRA adapter, the same modules as ``LLMAgent``'s (wraps
    ``model`` with PEFT) instead of all weights. Defaults follow the paper where SB3 has a
    counterpart: gamma 1, GAE lambda 0.95, clip 0.2, value clip 0.2, vf_coef 0.1, grad
    norm 1; ``ppo_kwargs`` overrides any ``PPO`` argument. ``env_kwargs`` go to
    ``PioneerEnv`` (e.g. ``observer_policy``, ``reward_fn``, ``max_prompt_tokens``).
    """
    if lora_r:
        model = with_lora(model, r=lora_r, alpha=lora_alpha or 2 * lora_r, seed=seed)
    device = _device_of(model)
    env_kwargs = {"task": task, "tokenizer": tokenizer, "max_new_tokens": max_new_tokens,
                  "info_texts": True, **env_kwargs}  # the texts in infos: evaluate_sb3_ppo reads them
    venv = make_vec_env(PioneerEnv, n_envs=n_envs, seed=seed, env_kwargs=env_kwargs)
    kwargs: dict[str, Any] = dict(
        n_steps=n_steps, batch_size=batch_size, n_epochs=n_epochs, learning_rate=learning_rate,
        gamma=1.0, gae_lambda=0.95, clip_range=0.2, clip_range_vf=0.2, vf_coef=0.1,
        ent_coef=0.0, max_grad_norm=1.0, seed=seed, device=device, verbose=0,
    )
    kwargs.update(ppo_kwargs or {})
    policy_kwargs = {"lm": model, "dtype": dtype, **kwargs.pop("policy_kwargs", {})}
    algo = PPO(LMActorCriticPolicy, venv, policy_kwargs=policy_kwargs, **kwargs)
    if not kwargs["verbose"] and kwargs.get("tensorboard_log") is None:
        # SB3's default logger makes an empty $TMPDIR/SB3-<time> folder per learn(): with
        # nothing to print or write, an in-memory one (EpisodeLog still reads its values).
        algo.set_logger(Logger(folder=None, output_formats=[]))
    return algo


class EpisodeLog(BaseCallback):
    """Records one row per SB3 iteration: timesteps, finished episodes, their mean reward and
    length, wall time, and SB3's ``train/*`` statistics of that iteration's update.

    ``on_row(row)`` is called once a row is complete (after its update).
    """

    def __init__(self, on_row=None) -> None:
        super().__init__()
        self.rows: list[dict[str, float]] = []
        self.on_row = on_row
        self._returns: list[float] = []
        self._lengths: list[int] = []
        self._t0 = time.perf_counter()
        self._open = False

    def _on_step(self) -> bool:
        for info in self.locals.get("infos", []):
            if "episode" in info:
                self._returns.append(float(info["episode"]["r"]))
                self._lengths.append(int(info["episode"]["l"]))
        return True

    def _on_rollout_end(self) -> None:
        self.rows.append({
            "timesteps": float(self.num_timesteps),
            "episodes": float(len(self._returns)),
            "ep_rew_mean": float(np.mean(self._returns)) if self._returns else float("nan"),
            "ep_len_mean": float(np.mean(self._lengths)) if self._lengths else float("nan"),
        })
        self._returns, self._lengths, self._open = [], [], True

    def _on_rollout_start(self) -> None:
        self._close_row()

    def _on_training_end(self) -> None:
        self._close_row()

    def _close_row(self) -> None:
        # SB3 runs train() after the rollout ends; its stats are still in the logger here.
        if not self._open:
            return
        row = self.rows[-1]
        row.update({k: float(v) for k, v in self.model.logger.name_to_value.items()
                    if k.startswith("train/")})
        row["time_s"] = time.perf_counter() - self._t0
        self._open = False
        if self.on_row is not None:
            self.on_row(row)


def train_sb3_ppo(
    model: nn.Module,
    tokenizer: Any,
    total_timesteps: int,
    *,
    progress_bar: bool = False,
    on_row=None,
    **make_kwargs: Any,
) -> tuple[PPO, list[dict[str, float]]]:
    """Build with :func:`make_sb3_ppo` and learn for ``total_timesteps`` tokens.

    Returns the trained ``PPO`` and one metrics row per iteration (see :class:`EpisodeLog`);
    ``on_row(row)`` is called as each iteration's update ends (e.g. to print or log it).
    """
    algo = make_sb3_ppo(model, tokenizer, **make_kwargs)
    log = EpisodeLog(on_row)
    algo.learn(total_timesteps=total_timesteps, callback=log, progress_bar=progress_bar)
    return algo, log.rows


def evaluate_sb3_ppo(algo: PPO, n_episodes: int = 8, deterministic: bool = False) -> list[dict[str, Any]]:
    """Play ``n_episodes`` fresh episodes of ``algo``'s env with the policy (no learning); one
    dict per episode: ``query``, ``text``, ``reward``, ``tokens``. The env is reset before
    and after, so ``algo.learn(..., reset_num_timesteps=False)`` can continue."""
    venv, done_eps = algo.get_env(), []
    obs = venv.reset()
    while len(done_eps) < n_episodes:
        actions, _ = algo.predict(obs, deterministic=deterministic)
        obs, rewards, dones, infos = venv.step(actions)
        for reward, done, info in zip(rewards, dones, infos, strict=True):
            if done and len(done_eps) < n_episodes:
                done_eps.append({"query": str(info.get("query", "")), "text": info.get("pioneer_text", ""),
                                 "reward": float(reward), "tokens": int(info.get("pioneer_tokens", 0))})
    algo._last_obs = venv.reset()  # a later learn() starts from fresh episodes
    algo._last_episode_starts = np.ones((venv.num_envs,), dtype=bool)
    return done_eps


def save_sb3_ppo(algo: PPO, path: str | Path, tokenizer: Any = None) -> Path:
    """Save the trained policy where Hugging Face tools can read it: ``model/`` (the LM, or
    only its LoRA adapter, by ``save_pretrained``, with the tokenizer) and ``value_head.pt``.

    (SB3's own ``algo.save`` would pickle the whole LM into its zip; this is the usual way.)
    """
    path = Path(path)
    policy: LMActorCriticPolicy = algo.policy
    policy.lm.save_pretrained(path / "model")
    if tokenizer is not None:
        tokenizer.save_pretrained(path / "model")
    torch.save(policy.value_head.state_dict(), path / "value_head.pt")
    (path / "sb3_ppo.json").write_text(json.dumps(
        {"num_timesteps": int(algo.num_timesteps), "n_steps": algo.n_steps, "n_envs": algo.n_envs,
         "batch_size": algo.batch_size, "n_epochs": algo.n_epochs, "gamma": algo.gamma,
         "gae_lambda": algo.gae_lambda, "vf_coef": algo.vf_coef, "dtype": policy.dtype}, indent=2))
    return path
