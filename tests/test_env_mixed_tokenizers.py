"""Agents with different tokenizers: spaces, the text hand-off, range checks, the forms of
``tokenizer=``, PettingZoo's and TorchRL's checks, and one tokenizer giving the recorded
episodes exactly."""

from __future__ import annotations

import functools
import importlib.util
import json
from pathlib import Path

import numpy as np
import pettingzoo
import pytest
from helpers.record_episodes import record
from helpers.tasks import EOS, FILM, make_test_task
from helpers.tiny import other_tokenizer, tiny_tokenizer
from pettingzoo.test import api_test, render_test, seed_test

import cory_env
from cory_env import CoryTextEnv, CoryTextVecEnv

RECORDED = Path(__file__).parent / "data" / "shared_tokenizer_episodes.json"


def mixed(k: int) -> list:
    return [tiny_tokenizer(), *[other_tokenizer()] * (k - 1)]


def make(k=2, **kw):
    return CoryTextEnv(task=make_test_task(), tokenizer=mixed(k), num_agents=k, **kw)


@pytest.mark.parametrize(
    "form",
    [
        lambda k: tiny_tokenizer(),
        lambda k: [tiny_tokenizer()] * k,
        lambda k: dict(zip(cory_env.agent_names(k), [tiny_tokenizer()] * k, strict=True)),
    ],
)
def test_one_tokenizer_replays_the_recorded_episodes_exactly(form):
    want = json.loads(RECORDED.read_text())
    assert json.loads(json.dumps(record(form), sort_keys=True)) == want


def test_each_agent_has_its_own_spaces_and_tokenizer():
    env = make(3)
    assert [env.action_space(a).n for a in env.possible_agents] == [320, 290, 290]
    assert [env.observation_space(a)["input_ids"].high.max() for a in env.possible_agents] == [
        319,
        289,
        289,
    ]
    assert env.tokenizer is tiny_tokenizer() and env.tokenizers["observer_1"] is other_tokenizer()
    assert env.config.vocab_sizes == (320, 290, 290) and env.config.vocab_size == 320
    assert env.config.pad_ids == (0, 0, 0) and env.config.eos_ids == (0, 0, 0)


def test_the_observer_reads_the_pioneers_text_in_its_own_ids():
    env = make(2, info_texts=True, max_prompt_tokens=48)  # room for the whole prompt
    env.reset(options={"query": "This movie was"})
    pioneer = [FILM, 1, EOS]
    for t in pioneer:
        env.step(t)
    text = tiny_tokenizer().decode(pioneer, skip_special_tokens=True)
    want = other_tokenizer()(f'Better: "This movie was{text}" This movie was')["input_ids"]
    obs = env.observe("observer_0")
    n = int(obs["attention_mask"].sum())
    assert obs["input_ids"][:n].tolist() == want and obs["input_ids"][n:].tolist() == [0] * (
        len(obs["input_ids"]) - n
    )
    assert env.infos["observer_0"]["observer_prompt_tokens"] == len(want)
    env.step(289)  # in the observer's range, past nothing
    env.step(EOS)
    assert env.response_ids("observer_0").tolist() == [289, EOS]
    assert env.text("observer_0") == other_tokenizer().decode([289])


def test_an_action_outside_the_smaller_vocabulary_is_refused_for_that_agent_only():
    env = make(2)
    env.reset(seed=0)
    env.step(300)  # fine for the pioneer (320)
    env.step(EOS)
    with pytest.raises(ValueError, match=r"\[0, 290\) \(observer_0's vocabulary\)"):
        env.step(300)
    env.step(289)  # the env stays usable
    venv = CoryTextVecEnv(2, task=make_test_task(), tokenizer=mixed(2))
    venv.reset(seed=0)
    venv.step(np.array([310, 310]))
    venv.step(np.array([EOS, EOS]))
    with pytest.raises(ValueError, match="of env 1 is out of range.*observer_0's vocabulary"):
        venv.step(np.array([1, 295]))


@pytest.mark.parametrize(
    "tokenizer, match",
    [
        ([tiny_tokenizer()], r"got 1 tokenizers for num_agents=2"),
        ({"pioneer": tiny_tokenizer()}, r"no tokenizer for \['observer_0'\]"),
        ({"pioneer": tiny_tokenizer(), "observer": 1, "judge": 2}, r"unknown agents \['judge'\]"),
        ({"pioneer": 1, "pioneer_0": 1, "observer": 1}, r"names one agent twice"),
        ([tiny_tokenizer(), 5], r"the tokenizer of observer_0"),
    ],
)
def test_bad_forms_are_refused_clearly(tokenizer, match):
    with pytest.raises((ValueError, TypeError), match=match):
        CoryTextEnv(task=make_test_task(), tokenizer=tokenizer)


def test_dict_form_by_short_or_full_names():
    env = CoryTextEnv(
        task=make_test_task(),
        tokenizer={"pioneer": tiny_tokenizer(), "observer_0": other_tokenizer()},
    )
    assert env.tokenizers == {"pioneer_0": tiny_tokenizer(), "observer_0": other_tokenizer()}
    assert (
        not env.config.shared
        and CoryTextEnv(task=make_test_task(), tokenizer=[tiny_tokenizer()] * 2).config.shared
    )


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.filterwarnings("ignore:Observation is not a NumPy array")
@pytest.mark.filterwarnings("ignore:Observation space for each agent probably")
def test_pettingzoo_tests_pass_with_mixed_tokenizers(k, capsys):
    def build(render_mode=None):
        return pettingzoo.make(
            "aec",
            "cory/CoryText-v0",
            task=make_test_task(),
            tokenizer=mixed(k),
            num_agents=k,
            render_mode=render_mode,
        )

    api_test(build(), num_cycles=30)
    seed_test(functools.partial(build), num_cycles=30)
    render_test(build)
    assert "query:" in capsys.readouterr().out


@pytest.mark.skipif(importlib.util.find_spec("torchrl") is None, reason="TorchRL: `marl` extra")
@pytest.mark.parametrize("k", [2, 3])
def test_torchrl_takes_mixed_tokenizers(k):
    from torchrl.envs.libs.pettingzoo import PettingZooWrapper
    from torchrl.envs.utils import MarlGroupMapType, check_env_specs

    env = PettingZooWrapper(
        env=pettingzoo.make(
            "aec", "cory/CoryText-v0", task=make_test_task(), tokenizer=mixed(k), num_agents=k
        ),
        use_mask=True,
        categorical_actions=True,
        group_map=MarlGroupMapType.ONE_GROUP_PER_AGENT,
    )
    assert env.full_action_spec["observer_0", "action"].space.n == 290
    assert env.full_action_spec["pioneer_0", "action"].space.n == 320
    check_env_specs(env)


def test_the_vector_env_gives_each_agent_its_own_arrays():
    venv = CoryTextVecEnv(
        2, task=make_test_task(), tokenizer=mixed(3), num_agents=3, max_prompt_tokens=48
    )
    assert {a: s.n for a, s in venv.single_action_spaces.items()} == {
        "pioneer_0": 320,
        "observer_0": 290,
        "observer_1": 290,
    }
    assert venv.single_action_space is venv.single_action_spaces["pioneer_0"]
    assert venv.action_space("observer_1").n == 290
    assert venv.observation_space("observer_0") is venv.single_observation_spaces["observer_0"]
    obs, _ = venv.reset(options={"queries": ["This movie was", "The plot was"]})
    venv.step(np.array([FILM, FILM]))
    obs, *_ = venv.step(np.array([EOS, EOS]))
    text = tiny_tokenizer().decode([FILM])
    for i, q in enumerate(["This movie was", "The plot was"]):
        want = other_tokenizer()(f'Better: "{q}{text}" {q}')["input_ids"]
        assert venv.prompt_ids[i].tolist() == want
        assert obs["input_ids"][i, : len(want)].tolist() == want
    assert venv.texts("pioneer_0") == [text, text]
