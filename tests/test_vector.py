"""The vector env: lockstep phases, the batch API, and equality with B independent AEC envs."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.tasks import BANG, EOS, FILM, THE, make_test_task

from cory_env import CoryTextEnv, CoryTextVecEnv

AGENTS = ("pioneer_0", "observer_0")


@pytest.mark.parametrize("stop_strings", [(), ("!",)])
@pytest.mark.parametrize("seed", [0, 7])
def test_equals_independent_aec_envs(tokenizer, seed, stop_strings):
    """Same seeds (env i: seed + i) and actions: same observations, texts, ids, rewards, infos."""
    b, kw = (
        5,
        {
            "task": make_test_task(stop_strings=stop_strings),
            "tokenizer": tokenizer,
            "info_texts": True,
        },
    )
    venv = CoryTextVecEnv(num_envs=b, **kw)
    envs = [CoryTextEnv(**kw) for _ in range(b)]
    obs, infos = venv.reset(seed=seed)
    for i, env in enumerate(envs):
        env.reset(seed=seed + i)
        assert venv.info(i) == env.infos["pioneer_0"]
        assert {k: v[i] for k, v in infos.items()} == env.infos[
            "pioneer_0"
        ]  # the same schema, as arrays
    # EOS and "!" are likely, so turns end at different steps in different envs.
    rng = np.random.default_rng(seed)
    choices = np.array([EOS, BANG, FILM, THE, 40, 100, 250])
    ends = {a: set() for a in AGENTS}
    while venv.agent_selection is not None:
        role, active = venv.agent_selection, venv.active
        for i, env in enumerate(envs):
            assert active[i] == (env.agent_selection == role and not env.terminations[role])
            for key in obs:
                assert np.array_equal(obs[key][i], env.observe(role)[key])
        actions = np.where(
            active, rng.choice(choices, size=b, p=[0.3, 0.2, 0.1, 0.1, 0.1, 0.1, 0.1]), -1
        )
        ends[role].add(int(active.sum()))
        for i in np.flatnonzero(active):
            envs[i].step(int(actions[i]))
        obs, rewards, terms, truncs, infos = venv.step(actions)
    for i, env in enumerate(envs):
        assert venv.info(i) == env.infos["pioneer_0"] == env.infos["observer_0"]
        for agent in AGENTS:
            assert rewards[agent][i] == env.rewards[agent]
            assert terms[agent][i] and not truncs[agent][i] and env.terminations[agent]
            assert np.array_equal(venv.response_ids(agent)[i], env.response_ids(agent))
            assert venv.texts(agent)[i] == env.text(agent)
            assert infos[f"{agent[:-2]}_tokens"][i] == len(env.response_ids(agent))
    assert any(len(s) > 2 for s in ends.values()), "envs should finish at different steps"


def test_phases_are_shared_and_inactive_actions_ignored(tokenizer):
    venv = CoryTextVecEnv(
        num_envs=3, task=make_test_task(), tokenizer=tokenizer, info_texts=True, max_new_tokens=3
    )
    queries = ["This movie was", "I loved", "The plot was"]
    obs, infos = venv.reset(options={"queries": queries})
    assert list(infos["query"]) == queries
    assert venv.agent_selection == "pioneer_0" and venv.active.all()
    prompts = venv.prompt_ids
    for i, q in enumerate(queries):
        assert prompts[i].tolist() == tokenizer(q)["input_ids"]
        assert obs["input_ids"][i, : len(prompts[i])].tolist() == prompts[i].tolist()
    assert obs["input_ids"].shape == (3, venv.max_prompt_tokens + 3)
    venv.step([EOS, FILM, FILM])
    assert venv.active.tolist() == [False, True, True] and venv.agent_selection == "pioneer_0"
    obs, rewards, terms, _, _ = venv.step([10**9, EOS, FILM])  # env 0 inactive: not checked
    assert venv.active.tolist() == [False, False, True]
    assert not terms["pioneer_0"].any() and not rewards["pioneer_0"].any()
    obs, *_ = venv.step([-5, -5, THE])  # env 2 hits max_new_tokens: the observer phase starts
    assert venv.agent_selection == "observer_0" and venv.active.all()
    assert [r.tolist() for r in venv.response_ids("pioneer_0")] == [
        [EOS],
        [FILM, EOS],
        [FILM, FILM, THE],
    ]
    assert venv.texts("pioneer_0") == ["", " film", " film film the"]
    for i, p in enumerate(venv.prompt_ids):
        assert obs["input_ids"][i, : len(p)].tolist() == p.tolist()
        assert obs["attention_mask"][i].sum() == len(p)
    for actions in ([BANG, EOS, FILM], [0, 0, EOS]):
        obs, rewards, terms, truncs, infos = venv.step(actions)
    assert venv.agent_selection is None and not venv.active.any()
    assert terms["pioneer_0"].all() and terms["observer_0"].all() and not truncs["observer_0"].any()
    assert venv.texts("observer_0") == ["!", "", " film"]
    np.testing.assert_array_equal(rewards["pioneer_0"], [0.25, 1.0, 3.0])  # cooperative
    np.testing.assert_array_equal(rewards["observer_0"], rewards["pioneer_0"])
    assert list(infos["observer_reward"]) == [0.25, 0.0, 1.0]


def test_observations_are_fresh_arrays(tokenizer):
    venv = CoryTextVecEnv(num_envs=2, task=make_test_task(), tokenizer=tokenizer, info_texts=True)
    obs0, _ = venv.reset(seed=1)
    before = obs0["input_ids"].copy()
    obs1, *_ = venv.step([FILM, FILM])
    assert not np.shares_memory(obs0["input_ids"], obs1["input_ids"])
    assert np.array_equal(obs0["input_ids"], before)
    obs1["input_ids"][:] = 5  # the caller may scribble on what it got
    assert venv.prompt_ids[0].tolist() != [5] * len(venv.prompt_ids[0])


def test_reset_options(tokenizer):
    venv = CoryTextVecEnv(num_envs=2, task=make_test_task(), tokenizer=tokenizer, info_texts=True)
    venv.reset(options={"queries": ["A", "B"], "answers": ["1", None], "max_new_tokens": 2})
    assert (
        list(venv.infos["answer"]) == ["1", ""] and venv.episode_max_new_tokens == 2
    )  # no gold answer: ""
    venv.step([FILM, FILM])
    venv.step([FILM, FILM])
    assert venv.agent_selection == "observer_0"
    with pytest.raises(ValueError, match="need 2 entries"):
        venv.reset(options={"queries": ["only one"]})
    a = list(venv.reset(seed=3)[1]["query"])
    assert a == list(venv.reset(seed=3)[1]["query"])
    env = CoryTextEnv(task=make_test_task(), tokenizer=tokenizer, info_texts=True)
    env.reset(seed=4)
    assert a[1] == env.infos["pioneer_0"]["query"]


def test_render_ansi(tokenizer):
    venv = CoryTextVecEnv(
        num_envs=2, task=make_test_task(), tokenizer=tokenizer, info_texts=True, render_mode="ansi"
    )
    venv.reset(options={"queries": ["This movie was", "I loved"]})
    venv.step([FILM, EOS])
    text = venv.render()
    assert "[env 1]" in text and "'I loved'" in text and "' film'" in text
