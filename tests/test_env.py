"""The AEC env: PettingZoo API and seed tests, observations, turns, rewards, rendering."""

from __future__ import annotations

import functools

import numpy as np
import pettingzoo
import pytest
from helpers.tasks import BANG, EOS, FILM, QUERIES, THE, film_reward, make_test_task, play  # noqa: F401
from pettingzoo.test import api_test, seed_test

import cory_env
from cory_env import FINISH, CoryTextEnv


@pytest.mark.filterwarnings("ignore:Observation is not a NumPy array")  # a dict, by design
@pytest.mark.filterwarnings("ignore:Observation space for each agent probably")
def test_api_test(tokenizer):
    env = pettingzoo.make(
        "aec", "cory/CoryText-v0", task=make_test_task(), tokenizer=tokenizer, info_texts=True
    )
    assert isinstance(env.unwrapped, CoryTextEnv)
    api_test(env, num_cycles=50)


def test_seed_test(tokenizer):
    make = functools.partial(
        pettingzoo.make, "aec", "cory/CoryText-v0", task=make_test_task(), tokenizer=tokenizer
    )
    seed_test(make, num_cycles=50)


def test_spaces_are_cached_and_observation_layout(tokenizer):
    env = CoryTextEnv(
        task=make_test_task(),
        tokenizer=tokenizer,
        info_texts=True,
        max_new_tokens=4,
        max_prompt_tokens=10,
    )
    length = 14
    for agent in env.possible_agents:
        assert env.observation_space(agent) is env.observation_space(agent)
        assert env.action_space(agent) is env.action_space(agent)
        assert env.action_space(agent).n == len(tokenizer)
        assert env.observation_space(agent)["input_ids"].shape == (length,)
    env.reset(options={"query": "This movie was"})
    prompt = tokenizer("This movie was")["input_ids"]
    env.step(FILM)
    env.step(THE)
    obs = env.observe("pioneer_0")
    assert obs["input_ids"].dtype == np.int64 and obs["attention_mask"].dtype == np.int8
    n = len(prompt) + 2
    assert obs["input_ids"][:n].tolist() == [*prompt, FILM, THE]
    assert (obs["input_ids"][n:] == tokenizer.pad_token_id).all()
    assert obs["attention_mask"].tolist() == [1] * n + [0] * (length - n)
    assert env.observation_space("pioneer_0").contains(obs)
    # The observer sees nothing until its turn.
    assert env.observe("observer_0")["attention_mask"].sum() == 0
    assert env.text("pioneer_0") == " film the"


@pytest.mark.parametrize(
    ("mode", "expected"), [("cooperative", (2.25, 2.25)), ("independent", (2.0, 0.25))]
)
def test_rewards_by_mode(tokenizer, mode, expected):
    env = cory_env.env(
        task=make_test_task(), tokenizer=tokenizer, info_texts=True, reward_mode=mode
    )
    env.reset(options={"query": "The plot was"})
    play(env, [FILM, FILM, EOS], [BANG, EOS])
    assert all(env.terminations.values()) and not any(env.truncations.values())
    assert env.rewards == {"pioneer_0": expected[0], "observer_0": expected[1]}
    info = env.infos["observer_0"]
    assert info == env.infos["pioneer_0"]
    assert info["pioneer_text"] == " film film" and info["observer_text"] == "!"
    assert (info["pioneer_reward"], info["observer_reward"]) == (2.0, 0.25)
    assert (info["pioneer_tokens"], info["observer_tokens"]) == (3, 2)  # EOS counted
    assert info["observer_prompt"] == 'Better: "The plot was film film" The plot was'
    assert info["observer_prompt_truncated"] is False
    # The dead agents are removed with None steps, each seeing its accumulated reward.
    for agent in ("pioneer_0", "observer_0"):
        assert env.agent_selection == agent
        assert env.last()[1] == expected[agent == "observer_0"]
        env.step(None)
    assert env.agents == []


def test_eos_is_recorded_but_not_decoded(tokenizer):
    env = CoryTextEnv(task=make_test_task(), tokenizer=tokenizer, info_texts=True)
    env.reset(options={"query": "I loved"})
    env.step(THE)
    env.step(EOS)
    assert env.agent_selection == "observer_0"
    assert env.response_ids("pioneer_0").tolist() == [THE, EOS]
    assert env.infos["observer_0"]["pioneer_text"] == " the"
    assert env.infos["observer_0"]["pioneer_finish"] == FINISH.index("eos")
    env.step(EOS)  # an immediate EOS is an empty answer
    info = env.infos["pioneer_0"]
    assert info["observer_text"] == "" and info["observer_tokens"] == 1


def test_turn_ends_at_max_new_tokens_and_option(tokenizer):
    env = CoryTextEnv(task=make_test_task(), tokenizer=tokenizer, info_texts=True, max_new_tokens=3)
    env.reset(options={"query": "I loved"})
    play(env, [FILM] * 3, [THE] * 3)
    assert env.infos["pioneer_0"]["pioneer_finish"] == FINISH.index("length")
    env.reset(options={"query": "I loved", "max_new_tokens": 1})
    play(env, [FILM], [FILM])
    assert env.rewards["pioneer_0"] == 2.0 and env.infos["pioneer_0"]["observer_tokens"] == 1
    with pytest.raises(ValueError, match="exceeds the env's max_new_tokens=3"):
        env.reset(options={"query": "I loved", "max_new_tokens": 4})


def test_stop_strings_end_the_turn_and_cut_the_text(tokenizer):
    task = make_test_task(stop_strings=("!",))
    env = CoryTextEnv(task=task, tokenizer=tokenizer, info_texts=True)
    env.reset(options={"query": "I loved"})
    play(env, [FILM, BANG], [BANG])
    info = env.infos["pioneer_0"]
    assert info["pioneer_text"] == " film" and info["pioneer_finish"] == FINISH.index("stop")
    assert env.response_ids("pioneer_0").tolist() == [FILM, BANG]
    assert info["observer_text"] == "" and info["observer_finish"] == FINISH.index("stop")
    assert info["pioneer_reward"] == 1.0 and info["observer_reward"] == 0.0


def test_observer_prompt_is_left_truncated(tokenizer):
    env = CoryTextEnv(
        task=make_test_task(),
        tokenizer=tokenizer,
        info_texts=True,
        max_prompt_tokens=8,
        max_new_tokens=4,
    )
    env.reset(options={"query": "I loved"})
    play(env, [FILM] * 4, [])
    info = env.infos["observer_0"]
    full = tokenizer(info["observer_prompt"])["input_ids"]
    assert len(full) > 8 and info["observer_prompt_truncated"] is True
    obs = env.observe("observer_0")
    assert obs["input_ids"][:8].tolist() == full[-8:] and obs["attention_mask"].sum() == 8


def test_forced_query_carries_the_gold_answer(tokenizer):
    seen = []

    def reward(queries, responses):
        seen.extend((str(q), q.answer) for q in queries)
        return np.zeros(len(queries), np.float32)

    env = CoryTextEnv(
        task=make_test_task(),
        tokenizer=tokenizer,
        info_texts=True,
        reward_fn=reward,
        max_new_tokens=1,
    )
    env.reset(options={"query": "This movie was"})  # a task query: answer looked up
    play(env, [EOS], [EOS])
    env.reset(options={"query": "Two plus two", "answer": "4"})
    play(env, [EOS], [EOS])
    assert seen == [("This movie was", "8")] * 2 + [("Two plus two", "4")] * 2
    assert env.infos["pioneer_0"]["answer"] == "4"


def test_seeded_reset_draws_queries_reproducibly(tokenizer):
    env = CoryTextEnv(task=make_test_task(), tokenizer=tokenizer, info_texts=True)
    drawn = []
    for seed in range(12):
        env.reset(seed=seed)
        drawn.append(env.infos["pioneer_0"]["query"])
    again = []
    for seed in range(12):
        env.reset(seed=seed)
        again.append(env.infos["pioneer_0"]["query"])
    assert drawn == again and set(drawn) == {str(q) for q in QUERIES}
    env = CoryTextEnv(task=make_test_task(), tokenizer=tokenizer, info_texts=True, split="eval")
    env.reset(seed=3)
    assert env.query == QUERIES[0] and env.query.answer == "8"


def test_render_ansi(tokenizer):
    env = cory_env.env(
        task=make_test_task(), tokenizer=tokenizer, info_texts=True, render_mode="ansi"
    )
    env.reset(options={"query": "The plot was"})
    play(env, [FILM, EOS], [BANG, EOS])
    text = env.render()
    assert "The plot was" in text and "' film'" in text and "'!'" in text
    assert "pioneer_0 1.25" in text
    with pytest.warns(UserWarning, match="without specifying any render mode"):
        assert (
            CoryTextEnv(task=make_test_task(), tokenizer=tokenizer, info_texts=True).render()
            is None
        )


def test_tokenizer_is_required_and_loads_from_a_path(tokenizer, tmp_path):
    with pytest.raises(TypeError, match="tokenizer is required"):
        CoryTextEnv(task=make_test_task())
    tokenizer.save_pretrained(tmp_path)
    env = CoryTextEnv(task=make_test_task(), tokenizer=str(tmp_path))
    assert env.action_space("pioneer_0").n == len(tokenizer)


def test_bad_construction_arguments(tokenizer):
    with pytest.raises(ValueError, match="reward_mode"):
        CoryTextEnv(
            task=make_test_task(), tokenizer=tokenizer, info_texts=True, reward_mode="selfish"
        )
    with pytest.raises(ValueError, match="render_mode"):
        CoryTextEnv(
            task=make_test_task(), tokenizer=tokenizer, info_texts=True, render_mode="rgb_array"
        )
    with pytest.raises(ValueError, match="split"):
        CoryTextEnv(task=make_test_task(), tokenizer=tokenizer, info_texts=True, split="test")
