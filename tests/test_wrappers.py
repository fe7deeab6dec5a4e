"""Single-agent Gymnasium views and the simple policies."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from helpers.tasks import BANG, EOS, FILM, make_test_task

from cory_env.wrappers import FixedTextPolicy, ObserverEnv, PioneerEnv, RandomPolicy


@pytest.mark.filterwarnings("ignore:.*Not able to test alternative render modes")
def test_check_env_pioneer_alone(tokenizer):
    env = PioneerEnv(
        task=make_test_task(), tokenizer=tokenizer, info_texts=True, render_mode="ansi"
    )
    check_env(env)
    env.reset(options={"query": "I loved"})
    assert "'I loved'" in env.render()


def test_check_env_with_fixed_partners(tokenizer):
    kw = {"task": make_test_task(), "tokenizer": tokenizer, "info_texts": True}
    check_env(PioneerEnv(RandomPolicy(len(tokenizer), seed=0), **kw), skip_render_check=True)
    check_env(ObserverEnv(RandomPolicy(len(tokenizer)), **kw), skip_render_check=True)
    check_env(ObserverEnv(FixedTextPolicy(tokenizer, " film!"), **kw), skip_render_check=True)


def test_pioneer_alone_gets_its_own_reward(tokenizer):
    env = PioneerEnv(task=make_test_task(), tokenizer=tokenizer, info_texts=True)
    obs, info = env.reset(options={"query": "I loved"})
    assert info["query"] == "I loved" and obs["attention_mask"].sum() == len(
        tokenizer("I loved")["input_ids"]
    )
    assert env.step(FILM)[1:4] == (0.0, False, False)
    obs, reward, terminated, truncated, info = env.step(EOS)
    assert (reward, terminated, truncated) == (1.0, True, False)
    assert info["pioneer_text"] == " film" and info["pioneer_reward"] == 1.0
    assert "observer_text" not in info
    with pytest.raises(RuntimeError, match="call reset"):
        env.step(FILM)


@pytest.mark.parametrize(("mode", "expected"), [("cooperative", 1.5), ("independent", 1.0)])
def test_pioneer_with_fixed_observer(tokenizer, mode, expected):
    observer = FixedTextPolicy(tokenizer, "!!")
    env = PioneerEnv(
        observer, task=make_test_task(), tokenizer=tokenizer, info_texts=True, reward_mode=mode
    )
    env.reset(options={"query": "I loved"})
    env.step(FILM)
    _, reward, terminated, _, info = env.step(EOS)
    assert terminated and reward == expected
    assert info["observer_text"] == "!!" and info["observer_tokens"] == 3  # "!", "!", EOS


def test_observer_sees_the_pioneers_answer(tokenizer):
    pioneer = FixedTextPolicy(tokenizer, " film film")
    env = ObserverEnv(pioneer, task=make_test_task(), tokenizer=tokenizer, info_texts=True)
    obs, info = env.reset(options={"query": "The plot was"})
    assert info["pioneer_text"] == " film film"
    prompt = tokenizer('Better: "The plot was film film" The plot was')["input_ids"]
    assert obs["input_ids"][: len(prompt)].tolist() == prompt
    assert obs["attention_mask"].sum() == len(prompt)
    env.step(BANG)
    _, reward, terminated, _, info = env.step(EOS)
    assert terminated and reward == 2.25 and info["observer_reward"] == 0.25


def test_fixed_text_policy_restarts_each_turn(tokenizer):
    policy = FixedTextPolicy(tokenizer, " film!")
    prompt = np.zeros(10, np.int64)
    prompt[:3] = [5, 6, 7]
    out = []
    ids, mask = prompt.copy(), (np.arange(10) < 3).astype(np.int8)
    for _ in range(3):
        out.append(policy({"input_ids": ids, "attention_mask": mask}))
        n = int(mask.sum())
        ids[n], mask[n] = out[-1], 1
    assert out == [FILM, BANG, EOS]
    # A new turn (a different prompt) starts the text again, without an explicit reset.
    assert (
        policy({"input_ids": prompt * 2, "attention_mask": (np.arange(10) < 3).astype(np.int8)})
        == FILM
    )


def test_random_policy_is_reproducible():
    obs = {"input_ids": np.zeros(4, np.int64), "attention_mask": np.ones(4, np.int8)}
    a, b = RandomPolicy(50, seed=1), RandomPolicy(50, seed=2)
    b.reset(1)
    seq = [a(obs) for _ in range(20)]
    assert seq == [b(obs) for _ in range(20)] and all(0 <= t < 50 for t in seq)
    assert len(set(seq)) > 5
