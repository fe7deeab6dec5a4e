"""Single-agent Gymnasium views of the CORY env: one role learned, the other fixed.

- :class:`PioneerEnv` ``(observer_policy=None, **env_kwargs)``: you play the pioneer. With
  no observer the episode ends with the pioneer's turn and the reward is ``r(q, a1)``
  alone (plain single-agent RLHF, the paper's PPO baseline); with an observer policy the
  observer then answers and the reward follows ``reward_mode``.
- :class:`ObserverEnv` ``(pioneer_policy, **env_kwargs)``: a fixed pioneer answers
  first (during ``reset``), you play the observer.

A policy is any callable ``obs -> token id``; if it has ``reset(seed)``, the view calls it
at every reset with a seed drawn from its own ``np_random`` (so seeded resets are
reproducible). :class:`FixedTextPolicy` and :class:`RandomPolicy` are two simple ones.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

from cory_env.env import CoryTextEnv
from cory_env.state import AGENTS

Obs = dict[str, np.ndarray]
Policy = Callable[[Obs], int]


class FixedTextPolicy:
    """Writes ``text`` token by token, then EOS: a scripted partner or a baseline."""

    def __init__(self, tokenizer: Any, text: str, eos_token_id: int | None = None) -> None:
        eos = tokenizer.eos_token_id if eos_token_id is None else eos_token_id
        if eos is None:
            raise ValueError("FixedTextPolicy needs an EOS token id (the tokenizer has none)")
        self.tokens = [*tokenizer(text, add_special_tokens=False)["input_ids"], int(eos)]
        self.reset()

    def reset(self, seed: int | None = None) -> None:
        self._seen: np.ndarray | None = None
        self._start = 0

    def __call__(self, obs: Obs) -> int:
        ids, n = obs["input_ids"], int(obs["attention_mask"].sum())
        prev = self._seen
        if prev is None or n != len(prev) + 1 or not np.array_equal(ids[: len(prev)], prev):
            self._start = n  # a new turn: not the previous observation plus one token
        self._seen = ids[:n].copy()
        return self.tokens[min(n - self._start, len(self.tokens) - 1)]


class RandomPolicy:
    """Uniformly random token ids (reseeded by ``reset(seed)``)."""

    def __init__(self, vocab_size: int, seed: int | None = None) -> None:
        self.vocab_size = int(vocab_size)
        self.rng = np.random.default_rng(seed)

    def reset(self, seed: int | None = None) -> None:
        if seed is not None:
            self.rng = np.random.default_rng(seed)

    def __call__(self, obs: Obs) -> int:
        return int(self.rng.integers(self.vocab_size))


class _RoleEnv(gym.Env):
    """One role of :class:`~cory_env.env.CoryTextEnv` as a Gymnasium env; the other role is a
    fixed policy."""

    metadata = {"render_modes": ["human", "ansi"], "render_fps": 1}
    role: str

    def __init__(self, partner: Policy | None, **env_kwargs: Any) -> None:
        if env_kwargs.get("num_agents", 2) != (2 if partner is not None else 1):
            raise ValueError(
                "the single-agent views play the two-agent game (one role, the other "
                "a fixed policy); use the AEC env for chains of num_agents > 2"
            )
        self.env = CoryTextEnv(**env_kwargs)
        self.partner = partner
        self.observation_space = self.env.observation_space(self.role)
        self.action_space = self.env.action_space(self.role)
        self.render_mode = self.env.render_mode
        self._over = True

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Obs, dict[str, Any]]:
        super().reset(seed=seed)
        self.env.reset(seed=seed, options=options)
        if self.partner is not None and hasattr(self.partner, "reset"):
            self.partner.reset(int(self.np_random.integers(2**31)))
        self._over = False
        self._play_partner()
        return self.env.observe(self.role), dict(self.env.infos[self.role])

    def step(self, action: Any) -> tuple[Obs, float, bool, bool, dict[str, Any]]:
        if self._over:
            raise RuntimeError("the episode is over: call reset()")
        self.env.step(action)
        self._play_partner()
        reward, info = self._outcome()
        return self.env.observe(self.role), reward, self._over, False, info

    def _play_partner(self) -> None:
        other = AGENTS[1 - AGENTS.index(self.role)]
        env = self.env
        while (
            self.partner is not None
            and env.agent_selection == other
            and not env.terminations[other]
        ):
            env.step(self.partner(env.observe(other)))

    def _outcome(self) -> tuple[float, dict[str, Any]]:
        env = self.env
        self._over = env.terminations[self.role]
        return (env.rewards[self.role] if self._over else 0.0), dict(env.infos[self.role])

    def render(self) -> str | None:
        return self.env.render()

    def close(self) -> None:
        self.env.close()


class PioneerEnv(_RoleEnv):
    """Play the pioneer; the observer is ``observer_policy``, or absent: then the env is the
    one-agent chain (``num_agents=1``) and the reward is the pioneer's own ``r(q, a1)``."""

    role = AGENTS[0]

    def __init__(self, observer_policy: Policy | None = None, **env_kwargs: Any) -> None:
        if observer_policy is None:
            env_kwargs = {**env_kwargs, "num_agents": 1}
        super().__init__(observer_policy, **env_kwargs)


class ObserverEnv(_RoleEnv):
    """Play the observer; the pioneer's answer comes from ``pioneer_policy`` during reset."""

    role = AGENTS[1]

    def __init__(self, pioneer_policy: Policy, **env_kwargs: Any) -> None:
        if pioneer_policy is None:
            raise TypeError("ObserverEnv needs a pioneer_policy (a callable obs -> token id)")
        super().__init__(pioneer_policy, **env_kwargs)
