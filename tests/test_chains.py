"""CORY chains of K agents in the env: the registry, PettingZoo's tests for K = 1..4, turn
order, each observer's prompt holding every earlier answer, rewards by mode, fixed info
keys, rendering, bad input, and the vector env against K independent AEC envs."""

from __future__ import annotations

import numpy as np
import pettingzoo
import pytest
from helpers.tasks import BANG, EOS, FILM, make_test_task
from pettingzoo.test import api_test, seed_test

import cory_env
from cory_env import CoryTextEnv, CoryTextVecEnv, agent_names, make_task
from cory_env.tasks.base import Task


def chain_task(**kw) -> Task:
    """The test task with a chain template that shows every earlier answer."""
    from dataclasses import replace

    return replace(
        make_test_task(**kw),
        chain_template="Refs: {answers} | {q}",
        chain_answer="[{i}]{a}",
        chain_separator=" ",
    )


@pytest.mark.parametrize("k", [1, 2, 3, 4])
@pytest.mark.filterwarnings("ignore:Observation is not a NumPy array")
@pytest.mark.filterwarnings("ignore:Observation space for each agent probably")
def test_pettingzoo_api_and_seed_tests_through_the_registry(tokenizer, k):
    env = pettingzoo.make(
        "aec", "cory/CoryText-v0", task=chain_task(), tokenizer=tokenizer, num_agents=k
    )
    assert env.possible_agents == list(agent_names(k))
    api_test(env, num_cycles=40)
    seed_test(
        lambda: cory_env.env(task=chain_task(), tokenizer=tokenizer, num_agents=k), num_cycles=40
    )


def test_agent_names_are_the_chain_in_turn_order():
    assert agent_names(1) == ("pioneer_0",)
    assert agent_names(2) == ("pioneer_0", "observer_0") == cory_env.AGENTS
    assert agent_names(4) == ("pioneer_0", "observer_0", "observer_1", "observer_2")


def play_chain(env, turns: list[list[int]]) -> None:
    for role, tokens in zip(env.possible_agents, turns):  # noqa: B905 (a prefix of the turns)
        for t in tokens:
            assert env.agent_selection == role
            env.step(t)


def test_three_agents_take_turns_and_each_observer_reads_every_earlier_answer(tokenizer):
    env = CoryTextEnv(
        task=chain_task(), tokenizer=tokenizer, num_agents=3, render_mode="ansi", info_texts=True
    )
    env.reset(options={"query": "I loved"})
    first_info = env.infos["pioneer_0"]
    play_chain(env, [[FILM, EOS], [BANG, EOS]])
    assert env.agent_selection == "observer_1"
    info = env.infos["observer_1"]
    assert (
        info["observer_prompt"] == 'Better: "I loved film" I loved'
    )  # the two-agent template, unchanged
    assert info["observer_1_prompt"] == "Refs: [1] film [2]! | I loved"  # every earlier answer
    prompt = tokenizer.decode(
        env.observe("observer_1")["input_ids"][
            : len(tokenizer(info["observer_1_prompt"])["input_ids"])
        ]
    )
    assert prompt == info["observer_1_prompt"]
    play_chain(env, [[], [], [FILM, FILM, EOS]])
    rewards = env.rewards
    assert rewards == {"pioneer_0": 3.25, "observer_0": 3.25, "observer_1": 3.25}  # 1 + 0.25 + 2
    final = env.infos["observer_1"]
    assert (final["pioneer_reward"], final["observer_reward"], final["observer_1_reward"]) == (
        1.0,
        0.25,
        2.0,
    )
    assert set(final) == set(first_info)  # the same keys from the first step
    assert all(v is not None for v in first_info.values())
    text = env.render()
    assert "observer_1 (3 tokens): ' film film'" in text and "observer_1 3.25 (own 2)" in text


@pytest.mark.parametrize(
    ("mode", "expected"),
    [("cooperative", [3.0, 3.0, 3.0, 3.0]), ("independent", [1.0, 0.0, 2.0, 0.0])],
)
def test_rewards_by_mode_for_four_agents(tokenizer, mode, expected):
    env = CoryTextEnv(task=chain_task(), tokenizer=tokenizer, num_agents=4, reward_mode=mode)
    env.reset(options={"query": "I loved"})
    play_chain(env, [[FILM, EOS], [EOS], [FILM, FILM, EOS], [EOS]])
    assert [env.rewards[a] for a in env.possible_agents] == expected


def test_one_agent_is_the_pioneer_alone(tokenizer):
    env = CoryTextEnv(task=make_test_task(), tokenizer=tokenizer, num_agents=1)
    env.reset(options={"query": "I loved"})
    play_chain(env, [[FILM, EOS]])
    assert env.rewards == {"pioneer_0": 1.0} and all(env.terminations.values())
    assert "observer_reward" not in env.infos["pioneer_0"]


def test_without_a_chain_template_the_observer_template_holds_the_joined_answers(tokenizer):
    task = make_test_task()  # observer template 'Better: "{q}{a1}" {q}', no chain template
    assert task.chain_prompt("Q", ["a", "b"]) == 'Better: "Qa\nb" Q'
    assert task.chain_prompt("Q", ["a"]) == task.observer_prompt("Q", "a")
    kt_off = task.without_knowledge_transfer()
    assert kt_off.chain_prompt("Q", ["a", "b"]) == kt_off.chain_prompt("Q", ["a"]) == "Q"


def test_the_papers_tasks_have_chain_templates():
    gsm = make_task("arith")
    prompt = gsm.chain_prompt("How many?", [" 3", " 4"])
    assert prompt.endswith("Question: How many?\nReference 1:  3\nReference 2:  4\nAnswer:")
    assert gsm.chain_prompt("How many?", [" 3"]).endswith(
        "Question: How many?\nReference:  3\nAnswer:"
    )
    imdb = make_task("sentiment")
    assert imdb.chain_prompt("This film", [" is", " was"]) == (
        'I can make these sentences "This film is", "This film was" more positive: This film'
    )


@pytest.mark.parametrize("k", [1, 3])
def test_bad_input_for_chains(tokenizer, k):
    env = cory_env.env(task=chain_task(), tokenizer=tokenizer, num_agents=k)
    env.reset(options={"query": "I loved"})
    with pytest.raises(ValueError, match="out of range"):
        env.step(10**6)
    with pytest.raises(TypeError, match="integer token id"):
        env.step(1.5)
    play_chain(env.unwrapped, [[EOS]] * k)
    with pytest.raises(RuntimeError, match="episode is over"):
        env.step(FILM)
    for bad in (0, -1, 1.5, True):
        with pytest.raises((ValueError, TypeError), match="num_agents"):
            CoryTextEnv(task=chain_task(), tokenizer=tokenizer, num_agents=bad)


def test_the_vector_env_matches_k_independent_aec_envs(tokenizer):
    k, b = 3, 4
    rng = np.random.default_rng(0)
    venv = CoryTextVecEnv(
        num_envs=b, task=chain_task(max_new_tokens=4), tokenizer=tokenizer, num_agents=k
    )
    envs = [
        CoryTextEnv(task=chain_task(max_new_tokens=4), tokenizer=tokenizer, num_agents=k)
        for _ in range(b)
    ]
    venv.reset(seed=3)
    for i, e in enumerate(envs):
        e.reset(seed=3 + i)
    assert venv.possible_agents == list(agent_names(k))
    while venv.agent_selection is not None:
        role = venv.agent_selection
        actions = rng.choice([FILM, BANG, EOS, 300], size=b)
        venv.step(actions)
        for i, e in enumerate(envs):
            if e.agent_selection == role and not e.terminations[role]:
                e.step(int(actions[i]))
    for i, e in enumerate(envs):
        assert venv.info(i) == e.infos["pioneer_0"]
        for a in venv.possible_agents:
            assert venv.rewards[a][i] == e.rewards[a]
            np.testing.assert_array_equal(venv.response_ids(a)[i], e.response_ids(a))
