"""Outside libraries take the env unchanged: numeric infos of a fixed schema, PettingZoo's
own test suite through the registry, and TorchRL's wrapper with no shim."""

from __future__ import annotations

import importlib.util

import numpy as np
import pettingzoo
import pytest
from helpers.scripts import load_script
from helpers.tasks import BANG, EOS, FILM, make_test_task
from pettingzoo.test import api_test, render_test, seed_test

import cory_env
from cory_env import CoryTextVecEnv

NUMBER = (bool, int, float)


def registered(tokenizer, k: int, **kw):
    return pettingzoo.make(
        "aec", "cory/CoryText-v0", task=make_test_task(), tokenizer=tokenizer, num_agents=k, **kw
    )


@pytest.mark.parametrize("k", [1, 2, 3])
def test_infos_are_numbers_with_one_schema_for_every_agent_at_every_step(tokenizer, k):
    env = registered(tokenizer, k)
    env.reset(seed=1)
    schema = None
    rng = np.random.default_rng(k)
    for _agent in env.agent_iter():
        obs, reward, term, trunc, info = env.last()
        for a in env.agents:
            types = {key: type(v) for key, v in env.infos[a].items()}
            assert all(isinstance(v, NUMBER) for v in env.infos[a].values()), env.infos[a]
            schema = schema or types
            assert types == schema  # the same keys and types, every agent, every step
        env.step(None if term or trunc else int(rng.choice([FILM, BANG, EOS])))
    assert {"turn", "query_tokens", "pioneer_reward", "pioneer_tokens", "pioneer_eos"} <= set(
        schema
    )


@pytest.mark.parametrize("k", [1, 2, 3])
def test_the_vector_env_infos_are_arrays_of_the_same_schema(tokenizer, k):
    venv = CoryTextVecEnv(num_envs=3, task=make_test_task(), tokenizer=tokenizer, num_agents=k)
    _, infos = venv.reset(seed=0)
    keys = set(infos)
    aec = cory_env.env(task=make_test_task(), tokenizer=tokenizer, num_agents=k)
    aec.reset(seed=0)
    assert keys == set(aec.infos["pioneer_0"])
    while venv.agent_selection is not None:
        _, _, _, _, infos = venv.step(np.full(3, EOS))
        assert set(infos) == keys
        assert all(
            isinstance(v, np.ndarray) and v.shape == (3,) and v.dtype.kind in "biuf"
            for v in infos.values()
        )


def test_info_texts_adds_the_texts_and_the_raw_env_tells_them(tokenizer):
    env = registered(tokenizer, 2, info_texts=True)
    env.reset(options={"query": "I loved"})
    for t in (FILM, EOS, BANG, EOS):
        env.step(t)
    info = env.infos["pioneer_0"]
    assert (info["query"], info["pioneer_text"], info["observer_text"]) == ("I loved", " film", "!")
    assert info["observer_prompt"] == 'Better: "I loved film" I loved'
    plain = registered(tokenizer, 2)
    plain.reset(options={"query": "I loved"})
    for t in (FILM, EOS, BANG, EOS):
        plain.step(t)
    assert plain.unwrapped.episode() == {
        "query": "I loved",
        "answer": "",
        "pioneer_0": " film",
        "observer_0": "!",
    }
    numeric = {k: v for k, v in info.items() if not isinstance(v, str)}
    assert numeric == plain.infos["pioneer_0"]


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.filterwarnings("ignore:Observation is not a NumPy array")
@pytest.mark.filterwarnings("ignore:Observation space for each agent probably")
def test_pettingzoos_whole_test_suite_through_the_registry(tokenizer, k, capsys):
    def make(render_mode=None):
        return registered(tokenizer, k, render_mode=render_mode)

    api_test(make(), num_cycles=30)
    seed_test(make, num_cycles=30)
    render_test(make)
    assert "query:" in capsys.readouterr().out  # "human" printed the episode


torchrl = pytest.mark.skipif(
    importlib.util.find_spec("torchrl") is None, reason="TorchRL is in the `marl` extra"
)


@torchrl
@pytest.mark.parametrize("k", [2, 3])
def test_torchrl_wraps_the_env_with_no_shim_and_its_specs_check(tokenizer, k):
    from torchrl.envs.libs.pettingzoo import PettingZooWrapper
    from torchrl.envs.utils import check_env_specs

    env = PettingZooWrapper(env=registered(tokenizer, k), use_mask=True, categorical_actions=True)
    assert set(env.group_map) == set(cory_env.agent_names(k))
    check_env_specs(env)


@torchrl
def test_a_torchrl_collector_batch_gets_the_envs_own_rewards(tokenizer):
    import torch
    from torchrl.collectors import Collector
    from torchrl.envs.libs.pettingzoo import PettingZooWrapper

    def make():
        return PettingZooWrapper(
            env=registered(tokenizer, 2), use_mask=True, categorical_actions=True, seed=5
        )

    collector = Collector(make, policy=None, frames_per_batch=40, total_frames=40)
    batch = next(iter(collector))
    collector.shutdown()
    done = batch["next", "done"].reshape(len(batch))
    for group in ("pioneer_0", "observer_0"):
        got = batch["next", group, "reward"].reshape(len(batch))[done]
        info = batch["next", group, "info"]
        want = (info["pioneer_reward"] + info["observer_reward"]).reshape(len(batch))[done]
        assert len(got) >= 1 and torch.allclose(got, want)  # cooperative: the sum of both


@torchrl
@pytest.mark.slow
def test_the_torchrl_example_trains_every_seat_with_torchrls_own_loop():
    import torch

    torch.manual_seed(0)
    example = load_script("examples/torchrl_marl.py")

    def length(queries, answers):  # dense: the random LMs' answers score 0 under VADER
        return np.array([len(a) / 10 for a in answers], np.float32)

    result = example.main(
        ["--iterations", "2", "--frames", "32", "--num-agents", "3"], reward_fn=length
    )
    assert result["groups"] == ["pioneer_0", "observer_0", "observer_1"]
    assert len(result["history"]) == 2
    assert all(change > 0 for change in result["weight_change"].values())  # every seat learned
    for row in result["history"]:  # cooperative: every seat saw the same episode rewards
        rewards = {row[f"{g}/reward"] for g in result["groups"]}
        assert len(rewards) == 1
