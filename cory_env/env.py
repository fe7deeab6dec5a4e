"""The CORY text environment, ``cory/CoryText-v0``.

==================  =========================================================================
Creation            ``make("aec", "cory/CoryText-v0", tokenizer=tok)`` (after ``import cory_env``)
Actions             Discrete (one token id)
Parallel API        No (the observer needs the pioneer's answer)
Manual Control      No
Agents              ``['pioneer_0', 'observer_0', ...]``, ``num_agents`` of them (default 2)
Action Shape        ``()``
Action Values       ``[0, len(tokenizers[agent]) - 1]``
Observation Shape   ``{"input_ids": (L,), "attention_mask": (L,)}``
Observation Values  the agent's token ids, ``{0, 1}``
==================  =========================================================================

Sequential cooperative text generation from "Coevolving with the Other You" (CORY,
NeurIPS 2024). One episode answers one query: the **pioneer** writes its answer one
token per step until EOS, ``max_new_tokens`` tokens or one of the task's stop strings;
the **observer** then answers the knowledge-transfer prompt
``task.observer_prompt(query, pioneer_answer)``, token by token; then both terminate.
With ``num_agents=K`` the chain is ``pioneer_0, observer_0, ..., observer_{K-2}``:
observer ``j`` answers ``task.chain_prompt(query, answers)`` over **every earlier answer**
of the episode (one answer: the observer template, so two-agent prompts keep their text;
more: the task's chain template). ``K = 1`` is the pioneer alone.
The agents are *roles*: which model plays which is the trainer's business.

.. rubric:: Tokenizers

``tokenizer=`` is one tokenizer (object, path or hub id) for every agent, or one per agent:
a list / tuple in chain order, or a dict by agent name (``"pioneer_0"``, ``"observer_0"``,
... or the short names ``"pioneer"``, ``"observer"``, ``"observer_1"``, ...). Each agent
acts, observes and stops in its own tokenizer's ids (its vocabulary, pad id, EOS); what
passes between agents is text: each answer is decoded by its agent's tokenizer (special
tokens skipped) and the next observer's prompt is encoded by that observer's.
``env.tokenizers`` is ``{agent: tokenizer}``; ``env.tokenizer`` the pioneer's.

.. rubric:: Observation Space

A dict of two fixed-length arrays, ``L = max_prompt_tokens + max_new_tokens``:
``input_ids`` (int64), the acting role's own prompt tokens followed by the tokens it has
produced so far, right-padded with the pad id (its tokenizer's, else its EOS), and
``attention_mask`` (int8), 1 on real tokens. An observer's prompt keeps its last
``max_prompt_tokens`` tokens if longer (``infos["observer_prompt_truncated"]``). An
observer sees an empty (all-padding) observation until its turn.

.. rubric:: Action Space

``Discrete(len(tokenizers[agent]))``: the next token in the agent's own vocabulary. Its
tokenizer's EOS ends the turn and is part of the response ids; decoded texts skip special
tokens and are cut at the first stop string.

.. rubric:: Rewards

Zero until the end of the episode. Then the task's reward function scores every answer
in one call, ``r(q, a1) ... r(q, aK)``, and ``reward_mode`` decides what each role
receives: ``"cooperative"`` (default, the paper's) gives every role the sum of all K;
``"independent"`` gives each its own. The KL penalty is not part of the env: it belongs
to the learner.

.. rubric:: Infos

Numbers only by default, and every agent's info holds the same keys from ``reset`` on, so
that libraries which turn infos into tensors (TorchRL) or buffer columns (tianshou) take
them as they are: ``turn`` (index of the role acting; K once done), ``query_tokens`` and,
per role with its short name ``p`` (``pioneer``, ``observer``, ``observer_1``, ...;
``seat_prefix``): ``p_reward`` (its own ``r(q, a)``, 0.0 until the end), ``p_tokens`` (EOS
included, 0 until its turn ends), ``p_finish`` (code into ``FINISH``: 0, then eos 1, stop 2,
length 3), ``p_eos`` and, for observers, ``p_prompt_tokens`` and ``p_prompt_truncated``.
``info_texts=True`` adds the strings ``query``, ``answer`` (``""`` without a gold answer),
``p_text`` and ``p_prompt``; ``render()`` and :meth:`CoryTextEnv.episode` give the texts too.

.. rubric:: Arguments

``CoryTextEnv(task="sentiment", tokenizer=..., max_new_tokens=None,
reward_mode="cooperative", render_mode=None, reward_fn=None, max_prompt_tokens=None,
split="train", task_kwargs=None, num_agents=2, info_texts=False)``; ``render_mode``
``"human"`` prints the episode's text, ``"ansi"`` returns it; ``reset(seed, options={"query": str,
"answer": str, "max_new_tokens": int})`` forces a query / this episode's turn length.

.. rubric:: Version History

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
    PIONEER,
    Episodes,
    agent_names,
    check_token,
    draw_query,
    forced_query,
    role_index,
)
from cory_env.tasks.base import Query, Task


def observation_space(cfg: EnvConfig, role: int = 0) -> spaces.Dict:
    """One episode's observation space of the seat at turn index ``role`` (its vocabulary)."""
    length = cfg.seq_len
    return spaces.Dict(
        {
            "input_ids": spaces.Box(0, cfg.vocab_sizes[role] - 1, (length,), np.int64),
            "attention_mask": spaces.Box(0, 1, (length,), np.int8),
        }
    )


class _OrderEnforcingWrapper(wrappers.OrderEnforcingWrapper):
    """PettingZoo's order enforcing, except that an action or ``last()`` after the episode
    raises, and a refused first ``reset`` still counts as no reset.

    (The stock wrapper only warns once every agent has been removed.)
    """

    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None) -> None:
        try:
            super().reset(seed=seed, options=options)
        except BaseException:
            self._has_reset = self.unwrapped.agent_selection is not None  # an earlier success
            raise

    def step(self, action: Any) -> None:
        if self._has_reset and not self.agents and action is not None:
            raise RuntimeError("the episode is over (no agents left): call reset()")
        super().step(action)

    def last(self, observe: bool = True) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        if self._has_reset and not self.agents:
            raise RuntimeError("the episode is over (no agents left): call reset()")
        return super().last(observe)


def env(**kwargs: Any) -> AECEnv:
    """The wrapped environment, as ``pettingzoo.make("aec", "cory/CoryText-v0", **kwargs)``.

    Only order enforcing is added: the raw env raises its own clear errors for bad
    actions (out of range, not an integer, after the end), which an assertion wrapper
    would pre-empt.
    """
    return _OrderEnforcingWrapper(CoryTextEnv(**kwargs))


class CoryTextEnv(AECEnv):
    """The raw CORY AEC environment (see the module docstring)."""

    metadata = {
        "render_modes": ["human", "ansi"],
        "name": "cory_text_v0",
        "is_parallelizable": False,
    }

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
        num_agents: int = 2,
        info_texts: bool = False,
    ) -> None:
        super().__init__()
        setup_env(
            self,
            render_mode,
            task=task,
            tokenizer=tokenizer,
            max_new_tokens=max_new_tokens,
            reward_mode=reward_mode,
            reward_fn=reward_fn,
            max_prompt_tokens=max_prompt_tokens,
            split=split,
            task_kwargs=task_kwargs,
            num_agents=num_agents,
            info_texts=info_texts,
        )
        self.possible_agents = list(agent_names(self.config.num_agents))
        self.observation_spaces = {
            a: observation_space(self.config, r) for r, a in enumerate(self.possible_agents)
        }
        self.action_spaces = {
            a: spaces.Discrete(self.config.vocab_sizes[r])
            for r, a in enumerate(self.possible_agents)
        }
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
        assert agent is not None, "reset() selects an agent whenever agents are left"
        if self.terminations[agent] or self.truncations[agent]:
            if action is not None:
                raise RuntimeError(
                    f"the episode is over: {agent} has terminated, so its only valid action is "
                    "None (which removes it); call reset() to start a new episode"
                )
            self._was_dead_step(action)
            return
        ep = self._episodes
        role = self.possible_agents.index(agent)
        vocab = self.config.vocab_sizes[role]
        if action is None:
            raise TypeError(
                f"{agent} is acting: its action must be a token id in [0, {vocab}), got None"
            )
        token = check_token(action, vocab, ep.owner(role))
        ep.step(np.array([token], np.int64))  # atomic: raises (e.g. RewardError) before any change
        self._cumulative_rewards[agent] = 0.0
        self._clear_rewards()
        if ep.done:
            self.rewards = {a: float(ep.rewards[r, 0]) for r, a in enumerate(self.possible_agents)}
            self.terminations = dict.fromkeys(self.agents, True)
            self._sync_infos()
            self.agent_selection = PIONEER  # the dead agents are then stepped with None
        elif ep.phase != role:  # this turn has ended: the next observer acts
            assert ep.phase is not None, "a step leaves the episode in some role's turn"
            self.agent_selection = self.possible_agents[ep.phase]
            self._sync_infos()
        self._accumulate_rewards()

    def observe(self, agent: str) -> dict[str, np.ndarray]:
        return self._episodes.observation(role_index(self.possible_agents, agent), 0)

    def last(self, observe: bool = True) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        if not self.agents:
            if self.agent_selection is None:
                raise RuntimeError("call reset() before last()")
            raise RuntimeError("the episode is over (no agents left): call reset()")
        return super().last(observe)

    def render(self) -> str | None:
        if self.render_mode is None:
            gymnasium.logger.warn(
                "You are calling render method without specifying any render mode."
            )
            return None
        text = "" if self._episodes.phase is None else self._episodes.render(0)
        if self.render_mode == "human":  # as PettingZoo's text envs: print, return None
            print(text)
            return None
        return text

    def close(self) -> None:
        pass

    # -- conveniences beyond the AEC API ------------------------------------------------------
    @property
    def query(self) -> Query | None:
        """The current :class:`~cory_env.tasks.base.Query` (with its gold answer)."""
        return self._episodes.queries[0] if self._episodes.queries else None

    def response_ids(self, agent: str) -> np.ndarray:
        """The tokens ``agent`` has produced this episode (EOS included)."""
        return self._episodes.responses(role_index(self.possible_agents, agent))[0].copy()

    def text(self, agent: str) -> str:
        """``agent``'s answer as text (final once its turn has ended)."""
        return self._episodes.text(role_index(self.possible_agents, agent))[0]

    def episode(self) -> dict[str, Any]:
        """The episode as text: ``query``, ``answer`` (gold, ``""`` if none) and each role's
        answer so far by its name (the texts the numeric infos leave out)."""
        q = self.query
        out: dict[str, Any] = {
            "query": "" if q is None else str(q),
            "answer": "" if q is None or q.answer is None else q.answer,
        }
        if self._episodes.phase is not None:
            out.update({a: self.text(a) for a in self.possible_agents})
        return out

    def _sync_infos(self) -> None:
        info = self._episodes.info(0)
        self.infos = {a: dict(info) for a in self.agents}
