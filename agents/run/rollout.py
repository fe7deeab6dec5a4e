"""Rollouts through the vector env: the pioneer's turn, then each observer's, in lockstep.

The env owns the protocol (prompts, templates, turn ends, rewards); the agents only pick
tokens, through the KV-cache sampler, and the rollout steps the env with them. What comes
back is what the learners need: each role's own prompt ids, its response ids, its texts,
its individual task score and the reward the env gave it (under the env's reward mode).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from agents.distributed import SINGLE, all_finished
from agents.policy.sampler import KVCacheSampler, sample_tokens
from cory_env import seat_prefix
from cory_env.tasks.base import GenerationConfig


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


def act(
    agent,
    venv,
    generation: GenerationConfig,
    *,
    generator: torch.Generator | None = None,
    max_new_tokens: int | None = None,
) -> list[np.ndarray]:
    """Let ``agent`` play ``venv``'s current role to the end of its turn; returns each env's
    response ids. Sampling follows ``generation`` (temperature, top_k, top_p);
    ``max_new_tokens`` is a safety cap: a turn running longer raises. An FSDP-sharded agent
    (``agent.sharded_over``) decodes until every process's turn is over, the tokens after
    its own turn's end discarded. ``generator`` is best
    on the agent's device (one on another device works, at the cost of a copy per token).
    """
    role = venv.agent_selection
    if role is None:
        raise RuntimeError("the episode is over: reset the venv before act()")
    budget = max_new_tokens or int(
        getattr(venv, "episode_max_new_tokens", 0) or getattr(generation, "max_new_tokens", 16)
    )
    spaces = getattr(venv, "single_action_spaces", None)  # by agent: each in its own vocabulary
    space = spaces[role] if spaces else getattr(venv, "single_action_space", None)
    n_actions = getattr(space, "n", None)
    # sharded: every forward is a collective
    lockstep = getattr(agent, "sharded_over", None) or SINGLE
    with KVCacheSampler.open(agent, venv.prompt_ids, budget) as sampler:
        done = False
        while True:
            if not done:
                logits = sampler.logits
                if n_actions is not None and logits.shape[-1] > n_actions:
                    logits = logits[:, :n_actions]  # padded vocabularies: only real token ids
                tokens = sample_tokens(logits, generation, generator)
                venv.step(tokens.cpu().numpy())
                done = venv.agent_selection != role
            if all_finished(done, lockstep, sampler.device):
                break
            if not done and max_new_tokens is not None and sampler.step + 1 >= max_new_tokens:
                raise RuntimeError(
                    f"the {role} turn did not end within max_new_tokens={max_new_tokens}"
                )
            sampler.advance(tokens)  # once done here: decoding on with the others, tokens discarded
    return venv.response_ids(role)


def play_turn(
    venv, agent, generation: GenerationConfig, generator: torch.Generator | None
) -> Turns:
    """Let ``agent`` play the venv's current role to the end of its turn."""
    role = venv.agent_selection
    prompts = [np.array(p, dtype=np.int64) for p in venv.prompt_ids]
    responses = act(agent, venv, generation, generator=generator)
    return Turns(
        prompts=prompts, responses=[np.asarray(r) for r in responses], texts=venv.texts(role)
    )


def rollout_chain(
    venv,
    agents: Sequence,
    queries: Sequence[str],
    generations: Sequence[GenerationConfig],
    max_new_tokens: int | Sequence[int],
    generator: torch.Generator | None = None,
) -> list[Turns]:
    """One CORY episode batch of a chain: ``agents[j]`` plays seat ``j`` (the pioneer, then
    each observer after every earlier answer) with ``generations[j]``; ``max_new_tokens``:
    one length, or one per seat. Scores and rewards are the env's."""
    roles = list(venv.possible_agents)
    if len(agents) != len(roles) or len(generations) != len(roles):
        raise ValueError(
            f"{len(agents)} agents / {len(generations)} generation settings for "
            f"the env's {len(roles)} roles {roles}"
        )
    limits = max_new_tokens if isinstance(max_new_tokens, int) else list(max_new_tokens)
    venv.reset(options={"queries": list(queries), "max_new_tokens": limits})
    turns = []
    for role, agent, generation in zip(roles, agents, generations, strict=True):
        if venv.agent_selection != role:
            raise RuntimeError(f"expected the {role} turn, got {venv.agent_selection!r}")
        turns.append(play_turn(venv, agent, generation, generator))
    infos, rewards = venv.infos, venv.rewards
    for role, side in zip(roles, turns, strict=True):
        side.scores = infos[f"{seat_prefix(role)}_reward"].astype(np.float32)
        side.rewards = rewards[role]
    return turns


def rollout_alone(
    venv,
    agent,
    queries: Sequence[str],
    generation: GenerationConfig,
    max_new_tokens: int,
    generator: torch.Generator | None = None,
    task=None,
) -> Turns:
    """The pioneer's turn only: a model answering from the query-only prompt of a chain of
    any length (a one-agent env ends there and scores the answers itself: prefer
    :func:`rollout_chain` of one agent). In a longer chain the episode is abandoned after
    that turn; with ``task`` the answers are scored by :meth:`cory_env.tasks.base.Task.score`
    (what a one-agent env gives the pioneer)."""
    venv.reset(options={"queries": list(queries), "max_new_tokens": max_new_tokens})
    turns = play_turn(venv, agent, generation, generator)
    if task is not None:
        turns.scores = task.score(queries, turns.texts)
        turns.rewards = turns.scores
    return turns
