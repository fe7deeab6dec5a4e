"""Fixed episodes of the env over one tokenizer, as JSON-able data: what
``tests/test_env_mixed_tokenizers.py`` compares with ``tests/data/shared_tokenizer_episodes.json``
(the env with a single tokenizer gives these prompts, ids, texts, rewards and infos exactly).

    cd tests && PYTHONPATH=. python -m helpers.record_episodes data/shared_tokenizer_episodes.json
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from cory_env import CoryTextEnv, CoryTextVecEnv

from .tasks import BANG, EOS, FILM, THE, make_test_task
from .tiny import tiny_tokenizer

TASKS = {"plain": {}, "stop": {"stop_strings": ("!",)}}
CASES = (  # (K, reward mode, task, seed)
    (2, "cooperative", "plain", 3),
    (2, "independent", "stop", 11),
    (3, "cooperative", "stop", 3),
    (3, "independent", "plain", 11),
)


def _actions(seed: int, agent_index: int, step: int, num_envs: int) -> np.ndarray:
    """Deterministic tokens: a scripted mix of known words, EOS and arbitrary ids."""
    script = (FILM, THE, BANG, FILM, EOS, THE)
    out = []
    for i in range(num_envs):
        n = seed * 7 + agent_index * 13 + step * 5 + i * 3
        out.append(script[n % len(script)] if n % 4 else (n * 37) % 320)
    return np.array(out, np.int64)


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _one(k: int) -> Any:
    return tiny_tokenizer()


def aec_episode(
    k: int, mode: str, task: str, seed: int, tokenizer: Callable[[int], Any] = _one
) -> dict[str, Any]:
    """One AEC episode: each turn's first observation ids, then ids, texts, rewards, infos."""
    env = CoryTextEnv(
        task=make_test_task(**TASKS[task]),
        tokenizer=tokenizer(k),
        num_agents=k,
        reward_mode=mode,
        info_texts=True,
        render_mode="ansi",
    )
    env.reset(seed=seed)
    first_obs: dict[str, list[int]] = {}
    rewards: dict[str, float] = {}
    infos: dict[str, Any] = {}
    assert all(env.infos[a] == env.infos[env.agents[0]] for a in env.agents)
    step = 0
    while env.agents:
        agent = env.agent_selection
        _, reward, term, trunc, info = env.last()
        if term or trunc:
            rewards[agent] = float(reward)
            infos = {k: _plain(v) for k, v in info.items()}  # the same for every agent
            env.step(None)
            continue
        if agent not in first_obs:
            first_obs[agent] = env.observe(agent)["input_ids"].tolist()
        role = env.possible_agents.index(agent)
        env.step(int(_actions(seed, role, step, 1)[0]))
        step += 1
    agents = env.possible_agents
    return {
        "first_obs": first_obs,
        "response_ids": {a: env.response_ids(a).tolist() for a in agents},
        "texts": {a: env.text(a) for a in agents},
        "rewards": rewards,
        "infos": infos,
        "episode": env.episode(),
    }


def vector_episodes(
    k: int, mode: str, task: str, seed: int, tokenizer: Callable[[int], Any] = _one
) -> dict[str, Any]:
    """Two episodes in lockstep: each turn's prompt ids and observations, then the results."""
    venv = CoryTextVecEnv(
        2,
        task=make_test_task(**TASKS[task]),
        tokenizer=tokenizer(k),
        num_agents=k,
        reward_mode=mode,
        info_texts=True,
    )
    obs, _ = venv.reset(seed=seed)
    turns: dict[str, Any] = {}
    step, rewards = 0, {}
    while venv.agent_selection is not None:
        agent = venv.agent_selection
        if agent not in turns:
            turns[agent] = {
                "obs": obs["input_ids"].tolist(),
                "prompt_ids": [p.tolist() for p in venv.prompt_ids],
            }
        role = venv.possible_agents.index(agent)
        obs, rewards, _, _, _ = venv.step(_actions(seed, role, step, venv.num_envs))
        step += 1
    agents = venv.possible_agents
    return {
        "turns": turns,
        "final_obs": obs["input_ids"].tolist(),
        "response_ids": {a: [r.tolist() for r in venv.response_ids(a)] for a in agents},
        "texts": {a: venv.texts(a) for a in agents},
        "rewards": {a: v.tolist() for a, v in rewards.items()},
        "infos": {key: _plain(v) for key, v in venv.infos.items()},
    }


def record(tokenizer: Callable[[int], Any] = _one) -> dict[str, Any]:
    """Every case, keyed ``<aec|vector>/k<K>/<mode>/<task>/seed<s>``; ``tokenizer(K)`` is the
    env's ``tokenizer`` argument (default: the tiny tokenizer itself)."""
    cases: dict[str, Any] = {}
    for k, mode, task, seed in CASES:
        key = f"k{k}/{mode}/{task}/seed{seed}"
        cases[f"aec/{key}"] = aec_episode(k, mode, task, seed, tokenizer)
        cases[f"vector/{key}"] = vector_episodes(k, mode, task, seed, tokenizer)
    return cases


if __name__ == "__main__":
    with open(sys.argv[1], "w") as f:
        json.dump(record(), f, separators=(",", ":"), sort_keys=True)
