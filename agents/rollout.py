"""Rollouts through the vector env: the pioneer's turn, then the observer's, in lockstep.

The env owns the protocol (prompts, templates, turn ends, rewards); the agents only pick
tokens. What comes back is what the learners need: each role's own prompt ids, its
response ids, its texts, its individual task score and the reward it receives.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from cory_env.rewards import combine
from cory_env.tasks.base import GenerationConfig

PIONEER, OBSERVER = "pioneer_0", "observer_0"


@dataclass
class Turns:
    """One role's side of a batch of episodes."""

    prompts: list[np.ndarray]
    responses: list[np.ndarray]
    texts: list[str]
    scores: np.ndarray | None = None
    """Individual task reward r(q, a) of each answer."""
    rewards: np.ndarray | None = None
    """What the role receives under the reward mode (cooperative: r(q,a1)+r(q,a2))."""


def play_turn(venv, agent, generation: GenerationConfig, generator: torch.Generator | None) -> Turns:
    """Let ``agent`` play the venv's current role to the end of its turn."""
    role = venv.agent_selection
    prompts = [np.array(p, dtype=np.int64) for p in venv.prompt_ids]
    responses = agent.act(venv, generation, generator=generator)
    return Turns(prompts=prompts, responses=[np.asarray(r) for r in responses], texts=venv.texts(role))


def rollout_pair(
    venv,
    pioneer,
    observer,
    queries: Sequence[str],
    generation: GenerationConfig,
    max_new_tokens: int,
    reward_mode: str,
    generator: torch.Generator | None = None,
) -> tuple[Turns, Turns]:
    """One CORY episode batch: the pioneer answers, then the observer answers after it."""
    venv.reset(options={"queries": list(queries), "max_new_tokens": max_new_tokens})
    if venv.agent_selection != PIONEER:
        raise RuntimeError(f"expected the pioneer to act first, got {venv.agent_selection!r}")
    first = play_turn(venv, pioneer, generation, generator)
    if venv.agent_selection != OBSERVER:
        raise RuntimeError(f"expected the observer's turn, got {venv.agent_selection!r}")
    second = play_turn(venv, observer, generation, generator)
    infos = venv.infos
    first.scores = np.array([info["pioneer_reward"] for info in infos], dtype=np.float32)
    second.scores = np.array([info["observer_reward"] for info in infos], dtype=np.float32)
    first.rewards, second.rewards = combine(first.scores, second.scores, reward_mode)
    return first, second


def rollout_alone(
    venv,
    agent,
    queries: Sequence[str],
    generation: GenerationConfig,
    max_new_tokens: int,
    generator: torch.Generator | None = None,
) -> Turns:
    """The pioneer's turn only: a model answering from the query-only prompt (evaluation,
    single-agent PPO). Scores are left to the caller (the episode is abandoned)."""
    venv.reset(options={"queries": list(queries), "max_new_tokens": max_new_tokens})
    return play_turn(venv, agent, generation, generator)
