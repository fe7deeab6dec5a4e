"""``CoryTextVecEnv``: B CORY episodes in lockstep, numpy in and out (what trainers use).

Phases are shared: every episode plays the pioneer until *all* pioneers have finished,
then every episode plays the observer. Episodes whose turn has ended are inactive
(``active[i]`` False) and their action is ignored. The rules are those of
:class:`cory_env.env.CoryTextEnv` (the same :class:`cory_env.state.Episodes` code), so
with env ``i`` seeded ``seed + i`` and the same actions the results are those of B
independent AEC envs::

    venv = CoryTextVecEnv(num_envs=8, task="sentiment", tokenizer=tok)
    obs, infos = venv.reset(seed=0)
    while venv.agent_selection is not None:
        obs, rewards, terms, truncs, infos = venv.step(policy(obs))  # (B,) token ids

With one tokenizer per agent (``tokenizer=[tok_a, tok_b]`` or ``{"pioneer": tok_a,
"observer": tok_b}``) each agent's observations and actions are in its own ids:
``single_observation_spaces`` / ``single_action_spaces`` (by agent) give each one's
spaces, ``single_observation_space`` / ``single_action_space`` the pioneer's.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding

from cory_env.config import EnvConfig, setup_env
from cory_env.env import CoryTextEnv, observation_space
from cory_env.state import AGENTS, Episodes, draw_query, forced_query, role_index
from cory_env.tasks.base import Task

Obs = dict[str, np.ndarray]
_ENV_ARGS = inspect.signature(CoryTextEnv)  # the arguments after num_envs


class CoryTextVecEnv:
    """B episodes of the CORY protocol in lockstep (see the module docstring)."""

    metadata = {"render_modes": ["human", "ansi"], "name": "cory_text_vec_v0"}
    possible_agents = list(AGENTS)
    """The agents, ``num_agents`` of them (this class attribute holds the two-agent default)."""
    # set by cory_env.config.setup_env
    config: EnvConfig
    task: Task
    tokenizer: Any
    tokenizers: dict[str, Any]
    render_mode: str | None

    def __init__(self, num_envs: int, *args: Any, **env_kwargs: Any) -> None:
        """``num_envs`` episodes; the other arguments are those of
        :class:`~cory_env.env.CoryTextEnv` (same names, order and defaults)."""
        env_args = _ENV_ARGS.bind(*args, **env_kwargs)
        env_args.apply_defaults()
        setup_env(self, **env_args.arguments)
        self._episodes = Episodes(self.config, num_envs)
        self.possible_agents = list(self._episodes.agents)
        self.num_envs = self._episodes.num_envs
        self.single_observation_spaces = {
            a: observation_space(self.config, r) for r, a in enumerate(self.possible_agents)
        }
        self.single_action_spaces = {
            a: spaces.Discrete(n)
            for a, n in zip(self.possible_agents, self.config.vocab_sizes, strict=True)
        }
        self.single_observation_space = self.single_observation_spaces[self.possible_agents[0]]
        self.single_action_space = self.single_action_spaces[self.possible_agents[0]]
        self._rngs = [seeding.np_random(None)[0] for _ in range(self.num_envs)]

    # -- the batch API --------------------------------------------------------------------------
    def reset(
        self, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Obs, dict[str, np.ndarray]]:
        """Start B episodes. ``options``: ``{"queries": [B str], "answers": [B], "max_new_tokens":
        n or [n per role]}``."""
        b = self.num_envs
        options = options or {}
        if seed is not None:
            self._rngs = [seeding.np_random(seed + i)[0] for i in range(b)]
        for key in ("queries", "answers"):
            if isinstance(options.get(key), str):
                raise TypeError(
                    f"options[{key!r}] must be a list of {b} entries (one per env), got a str"
                )
        if options.get("queries") is not None:
            texts = list(options["queries"])
            answers = list(options.get("answers") or [None] * len(texts))
            if len(texts) != b or len(answers) != b:
                raise ValueError(
                    f"options['queries'] / ['answers'] need {b} entries, got {len(texts)} / {len(answers)}"
                )
            queries = [forced_query(self.task, q, a) for q, a in zip(texts, answers, strict=True)]
        else:
            queries = [draw_query(self.task, self.config.split, rng) for rng in self._rngs]
        self._episodes.start(queries, options.get("max_new_tokens"))
        return self._episodes.observation(0), self.infos

    def step(
        self, actions: Any
    ) -> tuple[
        Obs,
        dict[str, np.ndarray],
        dict[str, np.ndarray],
        dict[str, np.ndarray],
        dict[str, np.ndarray],
    ]:
        """One token for every active episode; ``actions`` is an int array ``(B,)``."""
        ep = self._episodes
        if ep.phase is None:
            raise RuntimeError("call reset() before step()")
        if ep.done:
            raise RuntimeError("the episode is over (agent_selection is None): call reset()")
        ep.step(ep.check_actions(actions))
        b, done = self.num_envs, ep.done
        terms = {a: np.full(b, done) for a in self.possible_agents}
        truncs = {a: np.zeros(b, bool) for a in self.possible_agents}
        return ep.observation(ep.last_role), self.rewards, terms, truncs, self.infos

    @property
    def rewards(self) -> dict[str, np.ndarray]:
        """What each role receives in each episode under the reward mode, ``(B,)`` float32
        (fresh arrays): zeros until the episode's end, then the final rewards."""
        ep = self._episodes
        if not ep.done:
            return {a: np.zeros(self.num_envs, np.float32) for a in self.possible_agents}
        return {a: ep.rewards[r].copy() for r, a in enumerate(self.possible_agents)}

    @property
    def agent_selection(self) -> str | None:
        """The role playing in every episode, or None before reset / after the end."""
        ep = self._episodes
        return None if ep.phase is None or ep.done else self.possible_agents[ep.phase]

    @property
    def active(self) -> np.ndarray:
        """A ``(B,)`` bool array, true for the episodes whose current turn is still running."""
        return self._episodes.active.copy()

    @property
    def prompt_ids(self) -> list[np.ndarray]:
        """The current role's prompt of each episode (unpadded int64; the last observer's after
        the end)."""
        ep = self._episodes
        role = ep.last_role
        return [ep.ids[role, i, : ep.prompt_len[role, i]].copy() for i in range(self.num_envs)]

    def response_ids(self, agent: str) -> list[np.ndarray]:
        """The tokens ``agent`` produced in each episode (EOS included)."""
        return [r.copy() for r in self._episodes.responses(role_index(self.possible_agents, agent))]

    def texts(self, agent: str) -> list[str]:
        """``agent``'s answers as text (final once its turn has ended)."""
        return self._episodes.text(role_index(self.possible_agents, agent))

    @property
    def infos(self) -> dict[str, np.ndarray]:
        """The episodes' infos as ``(B,)`` arrays, one per key (the AEC env's schema; fresh
        arrays); :meth:`info` gives episode ``i``'s as the AEC env's dict."""
        return {k: v.copy() for k, v in self._episodes.info_arrays.items()}

    def info(self, i: int) -> dict[str, Any]:
        """Episode ``i``'s info, as :class:`~cory_env.env.CoryTextEnv`'s ``infos[agent]``."""
        return self._episodes.info(i)

    @property
    def episode_max_new_tokens(self) -> int:
        """The acting role's turn length bound this episode (reset option ``max_new_tokens``:
        one int, or one per role)."""
        return self._episodes.limit

    @property
    def max_new_tokens(self) -> int:
        return self.config.max_new_tokens

    @property
    def max_prompt_tokens(self) -> int:
        return self.config.max_prompt_tokens

    @property
    def pad_token_id(self) -> int:
        """The pioneer's pad id (every seat's: ``config.pad_ids``)."""
        return self.config.pad_token_id

    @property
    def eos_token_id(self) -> int | None:
        """The pioneer's EOS id (every seat's: ``config.eos_ids``)."""
        return self.config.eos_token_id

    def observation_space(self, agent: str) -> spaces.Dict:
        """One episode's observation space of ``agent`` (as the AEC env's)."""
        return self.single_observation_spaces[self.possible_agents[self._role(agent)]]

    def action_space(self, agent: str) -> spaces.Discrete:
        """``agent``'s action space: ``Discrete(len(its tokenizer))``."""
        return self.single_action_spaces[self.possible_agents[self._role(agent)]]

    def _role(self, agent: str) -> int:
        return role_index(self.possible_agents, agent)

    def render(self) -> str | None:
        if self.render_mode is None or self._episodes.phase is None:
            return None
        text = "\n\n".join(f"[env {i}]\n{self._episodes.render(i)}" for i in range(self.num_envs))
        if self.render_mode == "human":
            print(text)
            return None
        return text

    def close(self) -> None:
        pass
