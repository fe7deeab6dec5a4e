"""Bad input gets a clear exception and leaves the env usable (DESIGN.md, the env contract)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.tasks import BANG, EOS, FILM, make_test_task, play

import cory_env
from cory_env import CoryTextEnv, CoryTextVecEnv, RewardError


def aec(tokenizer, **kw):
    env = cory_env.env(task=make_test_task(), tokenizer=tokenizer, info_texts=True, **kw)
    env.reset(options={"query": "I loved"})
    return env


def vec(tokenizer, **kw):
    venv = CoryTextVecEnv(
        num_envs=2, task=make_test_task(), tokenizer=tokenizer, info_texts=True, **kw
    )
    venv.reset(options={"queries": ["I loved", "The plot was"]})
    return venv


def assert_aec_works(env) -> None:
    """Finish the running episode (if any) with valid actions, then play a fresh one."""
    if env.agents and not env.terminations[env.agent_selection]:
        while env.agent_selection == "pioneer_0":
            env.step(EOS)
        play(env, [], [FILM, EOS])
        info = env.infos["pioneer_0"]
        assert info["observer_reward"] == 1.0
        assert env.rewards["observer_0"] == info["pioneer_reward"] + 1.0
    env.reset(options={"query": "The plot was"})
    play(env, [BANG, EOS], [EOS])
    assert env.rewards == {"pioneer_0": 0.25, "observer_0": 0.25}


def assert_vec_works(venv) -> None:
    venv.reset(options={"queries": ["I loved", "The plot was"]})
    while venv.agent_selection == "pioneer_0":
        venv.step([FILM, EOS])
    while venv.agent_selection == "observer_0":
        *_, infos = venv.step([BANG, EOS])
    assert list(infos["pioneer_reward"]) == [6.0, 0.0]  # max_new_tokens=6 films
    assert list(infos["observer_reward"]) == [1.5, 0.0]


@pytest.mark.parametrize("action", [320, -1, 10**12, np.int64(400)])
def test_out_of_range_action(tokenizer, action):
    env = aec(tokenizer)
    with pytest.raises(ValueError, match=r"out of range: token ids are in \[0, 320\)"):
        env.step(action)
    assert env.response_ids("pioneer_0").size == 0 and env.agent_selection == "pioneer_0"
    assert_aec_works(env)


@pytest.mark.parametrize("action", [3.0, "5", [1, 2], True, np.float32(2), None])
def test_non_integer_action(tokenizer, action):
    env = aec(tokenizer)
    with pytest.raises(
        TypeError, match=r"integer token id in \[0, 320\)|token id in \[0, 320\), got None"
    ):
        env.step(action)
    assert_aec_works(env)


def test_integer_like_actions_are_accepted(tokenizer):
    env = aec(tokenizer)
    for action in (np.int32(FILM), np.array(FILM), np.array([FILM])):
        env.step(action)
    assert env.response_ids("pioneer_0").tolist() == [FILM] * 3


def test_vector_bad_actions(tokenizer):
    venv = vec(tokenizer)
    with pytest.raises(
        ValueError, match=r"action 320 of env 1 is out of range: token ids are in \[0, 320\)"
    ):
        venv.step([FILM, 320])
    with pytest.raises(TypeError, match=r"integer token ids in \[0, 320\), got dtype float64"):
        venv.step([1.0, 2.0])
    with pytest.raises(ValueError, match=r"expected 2 actions \(one per env\), got shape \(3,\)"):
        venv.step([1, 2, 3])
    assert [r.size for r in venv.response_ids("pioneer_0")] == [0, 0]
    venv.step([FILM, EOS])
    venv.step([FILM, 999])  # env 1 is inactive: its action is ignored, not validated
    assert [r.tolist() for r in venv.response_ids("pioneer_0")] == [[FILM, FILM], [EOS]]
    assert_vec_works(venv)


def test_stepping_a_finished_aec_episode(tokenizer):
    env = aec(tokenizer)
    play(env, [EOS], [EOS])
    with pytest.raises(RuntimeError, match="only valid action is None"):
        env.step(FILM)
    env.step(None)
    env.step(None)
    assert env.agents == []
    with pytest.raises(RuntimeError, match="no agents left"):
        env.step(FILM)
    assert_aec_works(env)


def test_step_before_reset(tokenizer):
    raw = CoryTextEnv(task=make_test_task(), tokenizer=tokenizer, info_texts=True)
    with pytest.raises(RuntimeError, match="reset"):
        raw.step(FILM)
    venv = CoryTextVecEnv(num_envs=2, task=make_test_task(), tokenizer=tokenizer, info_texts=True)
    assert venv.agent_selection is None
    with pytest.raises(RuntimeError, match="reset"):
        venv.step([FILM, FILM])
    assert_vec_works(venv)


def test_vector_step_after_the_end(tokenizer):
    venv = vec(tokenizer)
    venv.step([EOS, EOS])
    venv.step([EOS, EOS])
    assert venv.agent_selection is None
    with pytest.raises(RuntimeError, match="agent_selection is None"):
        venv.step([FILM, FILM])
    assert_vec_works(venv)


@pytest.mark.parametrize("query", ["", "   "])
def test_empty_query(tokenizer, query):
    env = aec(tokenizer)
    env.step(FILM)
    with pytest.raises(ValueError, match="query is empty"):
        env.reset(options={"query": query})
    assert env.response_ids("pioneer_0").tolist() == [FILM]  # the episode is untouched
    assert_aec_works(env)
    venv = vec(tokenizer)
    with pytest.raises(ValueError, match="query 1 is empty"):
        venv.reset(options={"queries": ["fine", query]})
    assert_vec_works(venv)


def test_over_long_query(tokenizer):
    env = aec(tokenizer, max_prompt_tokens=12)
    long = "This movie was great and the acting was wonderful."
    n = len(tokenizer(long)["input_ids"])
    with pytest.raises(ValueError, match=f"prompt has {n} tokens, more than max_prompt_tokens=12"):
        env.reset(options={"query": long})
    assert env.infos["pioneer_0"]["query"] == "I loved"
    assert_aec_works(env)


class FlakyReward:
    """``film_reward`` that raises or returns NaN while ``mode`` says so."""

    def __init__(self) -> None:
        self.mode = None

    def __call__(self, queries, responses):
        if self.mode == "raise":
            raise ZeroDivisionError("boom")
        out = np.array([r.count("film") + 0.25 * r.count("!") for r in responses], np.float32)
        if self.mode == "nan":
            out[-1] = np.nan
        return out


@pytest.mark.parametrize(
    ("mode", "match"), [("raise", "raised ZeroDivisionError: boom"), ("nan", "non-finite")]
)
def test_reward_failure_is_atomic_aec(tokenizer, mode, match):
    reward = FlakyReward()
    env = aec(tokenizer, reward_fn=reward)
    play(env, [FILM, EOS], [BANG])
    before = env.observe("observer_0")
    reward.mode = mode
    with pytest.raises(RewardError, match=match):
        env.step(EOS)
    assert env.agent_selection == "observer_0" and not any(env.terminations.values())
    assert env.response_ids("observer_0").tolist() == [BANG]
    after = env.observe("observer_0")
    assert all(np.array_equal(before[k], after[k]) for k in before)
    reward.mode = None
    env.step(EOS)  # the same step, retried
    assert env.rewards == {"pioneer_0": 1.25, "observer_0": 1.25}
    assert_aec_works(env)


@pytest.mark.parametrize("mode", ["raise", "nan"])
def test_reward_failure_is_atomic_vector(tokenizer, mode):
    reward = FlakyReward()
    venv = vec(tokenizer, reward_fn=reward)
    venv.step([FILM, EOS])
    venv.step([EOS, 5])
    venv.step([BANG, EOS])
    reward.mode = mode
    with pytest.raises(RewardError):
        venv.step([EOS, 5])
    assert venv.agent_selection == "observer_0" and venv.active.tolist() == [True, False]
    assert [r.tolist() for r in venv.response_ids("observer_0")] == [[BANG], [EOS]]
    reward.mode = None
    _, rewards, terms, _, _ = venv.step([EOS, 5])
    assert rewards["pioneer_0"].tolist() == [1.25, 0.0] and terms["observer_0"].all()
    assert_vec_works(venv)
