"""The examples run end to end: ``examples/tianshou_marl.py`` trains both CORY roles with
tianshou's PettingZoo wrapper, collector and on-policy trainer."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from helpers.scripts import load_script

import cory_env

# Not pytest.importorskip("tianshou"): importing tianshou here would load numba before the
# example can switch its JIT off (see examples/tianshou_marl.py), costing ~10-30 s of compiling.
if importlib.util.find_spec("tianshou") is None:
    pytest.skip(
        "tianshou is not installed (it is in the `marl` extra): the MARL example needs it",
        allow_module_level=True,
    )

tianshou_marl = load_script("examples/tianshou_marl.py")

ROLES = tianshou_marl.ROLES
TINY = dict(max_new_tokens=3, num_envs=2, episodes_per_update=4, steps_per_epoch=24, dim=8)


@pytest.fixture(scope="module")
def cooperative(tokenizer):
    return tianshou_marl.main(tokenizer=tokenizer, epochs=2, verbose=False, **TINY)


def test_trainer_loop_updates_both_policies(cooperative):
    r = cooperative
    assert set(r.weight_change) == set(ROLES)
    assert all(d > 0 for d in r.weight_change.values()), r.weight_change
    # one update per training step, each on >= episodes_per_update whole episodes
    assert r.info.update_step == len(r.update_starts) >= 2
    assert np.all(np.diff([*r.update_starts, len(r.episodes)]) >= TINY["episodes_per_update"])


def test_episodes_complete_through_the_wrapper(cooperative):
    r = cooperative
    assert len(r.episodes) == r.info.train_episode >= 2 * TINY["episodes_per_update"]
    assert r.env_steps == r.info.train_step == sum(sum(e.steps.values()) for e in r.episodes)
    for e in r.episodes:
        # the AEC turn order survives the wrapper: one buffer row per generated token
        assert e.steps == e.tokens
        assert 1 <= e.steps["pioneer_0"] <= TINY["max_new_tokens"]
        assert 1 <= e.steps["observer_0"] <= TINY["max_new_tokens"]
        assert e.query


def test_cooperative_rewards_match_infos(cooperative):
    episodes = cooperative.episodes
    returns = np.array([e.returns for e in episodes])
    collective = np.array([e.pioneer_reward + e.observer_reward for e in episodes])
    np.testing.assert_allclose(returns[:, 0], collective, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(returns[:, 1], collective, rtol=1e-6, atol=1e-6)
    assert np.any(collective != 0), "the reward gave every episode 0: nothing to learn from"


def test_independent_rewards_match_infos(tokenizer):
    r = tianshou_marl.main(
        tokenizer=tokenizer, reward_mode="independent", epochs=1, verbose=False, **TINY
    )
    returns = np.array([e.returns for e in r.episodes])
    np.testing.assert_allclose(returns[:, 0], [e.pioneer_reward for e in r.episodes], atol=1e-6)
    np.testing.assert_allclose(returns[:, 1], [e.observer_reward for e in r.episodes], atol=1e-6)


def test_both_roles_learn_from_the_episode_reward(tokenizer):
    """Through tianshou's multi-agent dispatcher every row of each role gets its episode's
    collective return, the pioneer's included (stock REINFORCE would give it 0)."""

    def length_reward(queries: list[str], responses: list[str]) -> np.ndarray:
        return np.array([1.0 + len(r) for r in responses])  # never 0, differs per episode

    env_kwargs = dict(task="sentiment", reward_fn=length_reward, max_new_tokens=3)
    algorithm, collector, recorder = tianshou_marl.build(
        tokenizer,
        env_kwargs,
        num_envs=2,
        episodes_per_update=6,
        dim=8,
        return_standardization=False,
    )
    collector.env.seed(1)
    collector.reset()
    collector.collect(n_episode=6)
    batch, indices = collector.buffer.sample(0)
    per_role = algorithm._preprocess_batch(batch, collector.buffer, indices)
    assert len(recorder.episodes) == 6
    assert all(e.returns[0] >= 2.0 for e in recorder.episodes)
    for role in ROLES:
        expected = np.concatenate([[e.returns[0]] * e.steps[role] for e in recorder.episodes])
        np.testing.assert_allclose(np.sort(per_role[role].returns), np.sort(expected), atol=1e-6)


def test_cli_with_the_example_tokenizer():
    args = tianshou_marl._parse(
        ["--epochs", "1", "--steps-per-epoch", "8", "--episodes-per-update", "2", "--num-envs", "2"]
    )
    assert args["tokenizer"] is None and args["reward_mode"] == "cooperative"
    r = tianshou_marl.main(**args, verbose=False)
    assert len(r.episodes) >= 2 and len(r.update_starts) >= 1


def test_tianshou_takes_the_registered_env_with_no_info_wrapper(tokenizer):
    env = tianshou_marl.make_env(tokenizer, task="sentiment", max_new_tokens=3)
    inner = env.env  # what tianshou's PettingZooEnv wraps: the registry's env, as registered
    assert type(inner) is type(cory_env.env(task="sentiment", tokenizer=tokenizer))
    assert not hasattr(tianshou_marl, "FixedInfoWrapper")
    env.reset(seed=0)
    info = inner.infos["pioneer_0"]
    assert all(v is not None for v in info.values())  # tianshou's buffer refuses nulls
