"""stable-baselines3 PPO on the single-agent Gymnasium view: bring your own algorithm.

The policy is :class:`baselines.sb3_policy.LMActorCriticPolicy`, an SB3 ``ActorCriticPolicy``
whose actor *is* a Hugging Face causal LM (next-token logits as the action distribution, a
linear value head on the final hidden state); LoRA adapters, when asked for, are
:class:`agents.policy.agent.LLMAgent`'s. SB3's own ``PPO`` class collects the rollouts (one
env step = one token) and runs its clipped-surrogate update unchanged.

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

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.vec_env import VecEnv
from torch import nn

from agents.policy.construction import with_lora
from baselines.sb3_policy import LMActorCriticPolicy, device_of
from cory_env.wrappers import PioneerEnv

__all__ = [
    "EpisodeLog",
    "LMActorCriticPolicy",
    "evaluate_sb3_ppo",
    "make_sb3_ppo",
    "save_sb3_ppo",
    "train_sb3_ppo",
]

# SB3 ``PPO`` arguments that follow the paper where SB3 has a counterpart.
_PAPER_DEFAULTS: dict[str, Any] = dict(
    gamma=1.0,
    gae_lambda=0.95,
    clip_range=0.2,
    clip_range_vf=0.2,
    vf_coef=0.1,
    ent_coef=0.0,
    max_grad_norm=1.0,
    verbose=0,
)


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
    rewards), mini-batches of ``batch_size`` tokens, ``n_epochs`` passes. ``lora_r``: train a
    LoRA adapter, the same modules as ``LLMAgent``'s (wraps ``model`` with PEFT) instead of
    all weights. Defaults follow the paper where SB3 has a counterpart: gamma 1, GAE lambda
    0.95, clip 0.2, value clip 0.2, vf_coef 0.1, grad norm 1; ``ppo_kwargs`` overrides any
    ``PPO`` argument. ``env_kwargs`` go to ``PioneerEnv`` (e.g. ``observer_policy``,
    ``reward_fn``, ``max_prompt_tokens``).
    """
    if lora_r:
        model = with_lora(model, r=lora_r, alpha=lora_alpha or 2 * lora_r, seed=seed)
    venv = _pioneer_venv(tokenizer, task, max_new_tokens, n_envs, seed, env_kwargs)
    kwargs: dict[str, Any] = dict(
        _PAPER_DEFAULTS,
        n_steps=n_steps,
        batch_size=batch_size,
        n_epochs=n_epochs,
        learning_rate=learning_rate,
        seed=seed,
        device=device_of(model),
    )
    kwargs.update(ppo_kwargs or {})
    policy_kwargs = {"lm": model, "dtype": dtype, **kwargs.pop("policy_kwargs", {})}
    algo = PPO(LMActorCriticPolicy, venv, policy_kwargs=policy_kwargs, **kwargs)
    _quiet_logger(algo, kwargs)
    return algo


def _pioneer_venv(
    tokenizer: Any,
    task: Any,
    max_new_tokens: int | None,
    n_envs: int,
    seed: int,
    env_kwargs: dict[str, Any],
) -> VecEnv:
    """``n_envs`` monitored ``PioneerEnv``s with the texts in their infos (for evaluation)."""
    env_kwargs = {
        "task": task,
        "tokenizer": tokenizer,
        "max_new_tokens": max_new_tokens,
        "info_texts": True,  # evaluate_sb3_ppo reads the texts
        **env_kwargs,
    }
    return make_vec_env(PioneerEnv, n_envs=n_envs, seed=seed, env_kwargs=env_kwargs)


def _quiet_logger(algo: PPO, kwargs: dict[str, Any]) -> None:
    """An in-memory logger when nothing is printed or written.

    SB3's default logger makes an empty ``$TMPDIR/SB3-<time>`` folder per ``learn()``;
    :class:`EpisodeLog` still reads the values of the in-memory one.
    """
    if not kwargs["verbose"] and kwargs.get("tensorboard_log") is None:
        algo.set_logger(Logger(folder=None, output_formats=[]))


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
        self.rows.append(
            {
                "timesteps": float(self.num_timesteps),
                "episodes": float(len(self._returns)),
                "ep_rew_mean": float(np.mean(self._returns)) if self._returns else float("nan"),
                "ep_len_mean": float(np.mean(self._lengths)) if self._lengths else float("nan"),
            }
        )
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
        row.update(
            {
                k: float(v)
                for k, v in self.model.logger.name_to_value.items()
                if k.startswith("train/")
            }
        )
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


def evaluate_sb3_ppo(
    algo: PPO, n_episodes: int = 8, deterministic: bool = False
) -> list[dict[str, Any]]:
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
                done_eps.append(
                    {
                        "query": str(info.get("query", "")),
                        "text": info.get("pioneer_text", ""),
                        "reward": float(reward),
                        "tokens": int(info.get("pioneer_tokens", 0)),
                    }
                )
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
    (path / "sb3_ppo.json").write_text(
        json.dumps(
            {
                "num_timesteps": int(algo.num_timesteps),
                "n_steps": algo.n_steps,
                "n_envs": algo.n_envs,
                "batch_size": algo.batch_size,
                "n_epochs": algo.n_epochs,
                "gamma": algo.gamma,
                "gae_lambda": algo.gae_lambda,
                "vf_coef": algo.vf_coef,
                "dtype": policy.dtype,
            },
            indent=2,
        )
    )
    return path
