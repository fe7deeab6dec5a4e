# noqa: D212, D415
"""
# CoryText

| Creation           | `make("aec", "cory/CoryText-v0", tokenizer=tok)` (after `import cory_env`) |
|--------------------|------------------------------------------------------------|
| Actions            | Discrete (one token id)                                    |
| Parallel API       | No (the observer needs the pioneer's answer)               |
| Manual Control     | No                                                         |
| Agents             | `agents= ['pioneer_0', 'observer_0']`                      |
| Agents             | 2                                                          |
| Action Shape       | ()                                                         |
| Action Values      | [0, len(tokenizer) - 1]                                    |
| Observation Shape  | {"input_ids": (L,), "attention_mask": (L,)}                |
| Observation Values | token ids, {0, 1}                                          |

Sequential cooperative text generation from "Coevolving with the Other You" (CORY,
NeurIPS 2024). One episode answers one query: the **pioneer** writes its answer one
token per step until EOS, ``max_new_tokens`` tokens or one of the task's stop strings;
the **observer** then answers the knowledge-transfer prompt
``task.observer_prompt(query, pioneer_answer)``, token by token; then both terminate.
The agents are *roles*: which model plays which is the trainer's business.

### Observation Space

A dict of two fixed-length arrays, ``L = max_prompt_tokens + max_new_tokens``:
``input_ids`` (int64), the acting role's own prompt tokens followed by the tokens it has
produced so far, right-padded with the pad id (the tokenizer's, else its EOS), and
``attention_mask`` (int8), 1 on real tokens. The observer's prompt keeps its last
``max_prompt_tokens`` tokens if longer (``infos["observer_prompt_truncated"]``). The
observer sees an empty (all-padding) observation until its turn.

### Action Space

``Discrete(len(tokenizer))``: the next token. EOS ends the turn and is part of the
response ids; decoded texts skip special tokens and are cut at the first stop string.

### Rewards

Zero until the end of the episode. Then the task's reward function scores both answers
in one call, ``r(q, a1)`` and ``r(q, a2)``, and ``reward_mode`` decides what each role
receives: ``"cooperative"`` (default, the paper's) gives both ``r(q,a1) + r(q,a2)``;
``"independent"`` gives each its own. The individual rewards, texts, token counts
(EOS included) and the observer's prompt are in ``infos``. The KL penalty is not part of
the env: it belongs to the learner.

### Arguments

``CoryTextEnv(task="sentiment", tokenizer=..., max_new_tokens=None,
reward_mode="cooperative", render_mode=None, reward_fn=None, max_prompt_tokens=None,
split="train", task_kwargs=None)``; ``reset(seed, options={"query": str, "answer": str,
"max_new_tokens": int})`` forces a query / this episode's turn length.

### Version History

* v0: Initial version (0.1.0)
"""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding
from pettingzoo import AECEnv
from pettingzoo.utils import wrappers

from cory_env.config import EnvConfig, setup_env
from cory_env.state import (
    AGENTS,
    DONE,
    OBSERVER,
    OBSERVER_TURN,
    PIONEER,
    Episodes,
    check_token,
    draw_query,
    forced_query,
)
from cory_env.tasks.base import Query, Task


def observation_space(cfg: EnvConfig) -> spaces.Dict:
    """The per-episode observation space of a config."""
    length = cfg.seq_len
    return spaces.Dict(
        {
            "input_ids": spaces.Box(0, cfg.vocab_size - 1, (length,), np.int64),
            "attention_mask": spaces.Box(0, 1, (length,), np.int8),
        }
    )


class _OrderEnforcingWrapper(wrappers.OrderEnforcingWrapper):
    """PettingZoo's order enforcing, except that an action after the episode raises.

    (The stock wrapper only warns once every agent has been removed.)
    """

    def step(self, action: Any) -> None:
        if self._has_reset and not self.agents and action is not None:
            raise RuntimeError("the episode is over (no agents left): call reset()")
        super().step(action)


def env(**kwargs: Any) -> AECEnv:
    """The wrapped environment, as ``pettingzoo.make("aec", "cory/CoryText-v0", **kwargs)``.

    Only order enforcing is added: the raw env raises its own clear errors for bad
    actions (out of range, not an integer, after the end), which an assertion wrapper
    would pre-empt.
    """
    return _OrderEnforcingWrapper(CoryTextEnv(**kwargs))


class CoryTextEnv(AECEnv):
    """The raw CORY AEC environment (see the module docstring)."""

    metadata = {"render_modes": ["ansi"], "name": "cory_text_v0", "is_parallelizable": False}

    def __init__(
        self,
        task: str | Task = "sentiment",
        tokenizer: Any = None,
        max_new_tokens: int | None = None,
        reward_mode: str = "cooperative",
        render_mode: str | None = None,
        reward_fn: Any = None,
        max_prompt_tokens: int | None = None,
        split: str = "train",
        task_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        setup_env(
            self, render_mode, task=task, tokenizer=tokenizer, max_new_tokens=max_new_tokens,
            reward_mode=reward_mode, reward_fn=reward_fn, max_prompt_tokens=max_prompt_tokens,
            split=split, task_kwargs=task_kwargs,
        )
        self.possible_agents = list(AGENTS)
        self.observation_spaces = {a: observation_space(self.config) for a in AGENTS}
        self.action_spaces = {a: spaces.Discrete(self.config.vocab_size) for a in AGENTS}
        self._episodes = Episodes(self.config, 1)
        self.np_random, self.np_random_seed = seeding.np_random(None)
        self.agents: list[str] = []
        self.rewards: dict[str, float] = {}
        self._cumulative_rewards: dict[str, float] = {}
        self.terminations: dict[str, bool] = {}
        self.truncations: dict[str, bool] = {}
        self.infos: dict[str, dict[str, Any]] = {}
        self.agent_selection: str | None = None

    def observation_space(self, agent: str) -> spaces.Dict:
        return self.observation_spaces[agent]

    def action_space(self, agent: str) -> spaces.Discrete:
        return self.action_spaces[agent]

    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None) -> None:
        if seed is not None:
            self.np_random, self.np_random_seed = seeding.np_random(seed)
        options = options or {}
        if options.get("query") is not None:
            query = forced_query(self.task, options["query"], options.get("answer"))
        else:
            query = draw_query(self.task, self.config.split, self.np_random)
        self._episodes.start([query], options.get("max_new_tokens"))  # validates first
        self.agents = self.possible_agents[:]
        self.rewards = dict.fromkeys(self.agents, 0.0)
        self._cumulative_rewards = dict.fromkeys(self.agents, 0.0)
        self.terminations = dict.fromkeys(self.agents, False)
        self.truncations = dict.fromkeys(self.agents, False)
        self._sync_infos()
        self.agent_selection = PIONEER

    def step(self, action: Any) -> None:
        agent = self.agent_selection
        if not self.agents:
            if agent is None:
                raise RuntimeError("call reset() before step()")
            if action is not None:
                raise RuntimeError("the episode is over (no agents left): call reset()")
            return
        if self.terminations[agent] or self.truncations[agent]:
            if action is not None:
                raise RuntimeError(
                    f"the episode is over: {agent} has terminated, so its only valid action is "
                    "None (which removes it); call reset() to start a new episode"
                )
            self._was_dead_step(action)
            return
        if action is None:
            raise TypeError(
                f"{agent} is acting: its action must be a token id in [0, {self.config.vocab_size}), got None"
            )
        token = check_token(action, self.config.vocab_size)
        ep = self._episodes
        ep.step(np.array([token], np.int64))  # atomic: raises (e.g. RewardError) before any change
        self._cumulative_rewards[agent] = 0.0
        self._clear_rewards()
        if ep.phase == OBSERVER_TURN and agent == PIONEER:
            self.agent_selection = OBSERVER
            self._sync_infos()
        elif ep.phase == DONE:
            self.rewards = {a: float(ep.rewards[r, 0]) for r, a in enumerate(AGENTS)}
            self.terminations = dict.fromkeys(self.agents, True)
            self._sync_infos()
            self.agent_selection = PIONEER  # the dead agents are then stepped with None
        self._accumulate_rewards()

    def observe(self, agent: str) -> dict[str, np.ndarray]:
        return self._episodes.observation(AGENTS.index(agent), 0)

    def render(self) -> str | None:
        if self.render_mode is None:
            gymnasium.logger.warn("You are calling render method without specifying any render mode.")
            return None
        if self._episodes.phase is None:
            return ""
        return self._episodes.render(0)

    def close(self) -> None:
        pass

    # -- conveniences beyond the AEC API ------------------------------------------------------
    @property
    def query(self) -> Query | None:
        """The current :class:`~cory_env.tasks.base.Query` (with its gold answer)."""
        return self._episodes.queries[0] if self._episodes.queries else None

    def response_ids(self, agent: str) -> np.ndarray:
        """The tokens ``agent`` has produced this episode (EOS included)."""
        return self._episodes.responses(AGENTS.index(agent))[0].copy()

    def text(self, agent: str) -> str:
        """``agent``'s answer as text (final once its turn has ended)."""
        return self._episodes.text(AGENTS.index(agent))[0]

    def _sync_infos(self) -> None:
        info = self._episodes.infos[0]
        self.infos = {a: dict(info) for a in self.agents}
