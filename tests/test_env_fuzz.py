"""Fuzzed env input (Hypothesis): random call sequences on the AEC env and the vector env,
chains K = 1..4, both reward modes.

Every invalid call must raise the documented error and change nothing, the state after
every call must match a reference model written from the env contract, and after every
sequence PettingZoo's ``api_test`` must pass on the same AEC env (the vector env must play
a fresh episode to its rewards). The machines are in ``helpers/fuzz_aec.py`` and
``helpers/fuzz_vector.py``. The runs are deterministic (derandomized, no example database);
the slow-marked variant runs 10x the sequences. The module prints the sequences and calls
tried. Below them, one regression test per env bug the fuzzing found.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from helpers.fuzz import COUNTS, TOK
from helpers.fuzz_aec import AecFuzz
from helpers.fuzz_vector import VecFuzz
from helpers.tasks import EOS, FILM, make_test_task
from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test

import cory_env
from cory_env import CoryTextEnv, CoryTextVecEnv
from cory_env.rewards import REWARD_MODES

FAST = settings(
    max_examples=40,
    stateful_step_count=30,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
SLOW = settings(FAST, max_examples=400)
AEC_KINDS = {"reset", "step", "last", "observe", "render", "close", "refused", "dead_step"}
AEC_OUTCOMES = {"episode_end", "reward_failure"}
RUNS: Counter[str] = Counter()


@pytest.fixture(scope="module", autouse=True)
def report_counts(request):
    """Print the sequences and calls tried by this module's fuzz runs."""
    yield
    if RUNS:
        calls = sum(RUNS[k] for k in RUNS if k.startswith("call:"))
        line = (
            f"env fuzz: {RUNS['sequences']} sequences, {calls} calls "
            f"({RUNS['call:refused']} refused, {RUNS['call:episode_end']} episodes ended) "
            f"over {RUNS['runs']} runs"
        )
        plugins = request.config.pluginmanager
        reporter, capture = (
            plugins.get_plugin("terminalreporter"),
            plugins.get_plugin("capturemanager"),
        )
        if reporter is not None and capture is not None:
            with capture.global_and_fixture_disabled():  # past pytest's output capture
                reporter.write_line(line)


def run(machine: type, k: int, mode: str, how: settings) -> Counter[str]:
    """One fuzz run; its counts (also added to the module's totals)."""
    COUNTS.clear()
    run_state_machine_as_test(lambda: machine(k, mode), settings=how)
    counts = Counter(COUNTS)
    RUNS["runs"] += 1
    RUNS["sequences"] += counts.pop("sequences")
    RUNS.update({f"call:{key}": n for key, n in counts.items()})
    return counts


def check_aec(k: int, mode: str, how: settings) -> None:
    counts = run(AecFuzz, k, mode, how)
    assert counts.keys() >= AEC_KINDS, AEC_KINDS - counts.keys()  # every kind of call made
    assert counts.keys() >= AEC_OUTCOMES, AEC_OUTCOMES - counts.keys()


def check_vector(k: int, mode: str, how: settings) -> None:
    counts = run(VecFuzz, k, mode, how)
    kinds = {"reset", "step", "render", "close", "answers", "refused", "episode_end"}
    assert kinds | {"mixed_ignored", "reward_failure"} <= counts.keys()


@pytest.mark.parametrize("mode", REWARD_MODES)
@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_aec_env_under_random_call_sequences(k, mode):
    check_aec(k, mode, FAST)


@pytest.mark.parametrize("mode", REWARD_MODES)
@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_vector_env_under_random_action_arrays(k, mode):
    check_vector(k, mode, FAST)


@pytest.mark.slow
@pytest.mark.parametrize("mode", REWARD_MODES)
@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_aec_env_under_random_call_sequences_long(k, mode):
    check_aec(k, mode, SLOW)


@pytest.mark.slow
@pytest.mark.parametrize("mode", REWARD_MODES)
@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_vector_env_under_random_action_arrays_long(k, mode):
    check_vector(k, mode, SLOW)


# -- regressions: the env bugs the fuzzing found ---------------------------------------------
def test_a_refused_first_reset_is_no_reset():
    env = cory_env.env(task=make_test_task(), tokenizer=TOK)
    with pytest.raises(ValueError, match="query is empty"):
        env.reset(options={"query": " "})
    with pytest.raises(AssertionError, match="reset\\(\\) needs to be called before step"):
        env.step(FILM)  # not "the episode is over"
    with pytest.raises(AttributeError, match="agents cannot be accessed before reset"):
        _ = env.agents
    env.reset(options={"query": "I loved"})
    with pytest.raises(ValueError, match="query is empty"):
        env.reset(options={"query": ""})
    env.step(FILM)  # a refused reset after a good one keeps its episode
    assert env.unwrapped.response_ids("pioneer_0").tolist() == [FILM]


def test_last_after_the_episode_is_a_clear_error():
    env = cory_env.env(task=make_test_task(), tokenizer=TOK, num_agents=2)
    env.reset(options={"query": "I loved"})
    for action in (EOS, EOS, None, None):
        env.step(action)
    assert env.agents == []
    with pytest.raises(RuntimeError, match="the episode is over \\(no agents left\\)"):
        env.last()  # was KeyError: 'pioneer_0'
    raw = CoryTextEnv(task=make_test_task(), tokenizer=TOK)
    with pytest.raises(RuntimeError, match="call reset\\(\\) before last\\(\\)"):
        raw.last()  # was a bare AssertionError


def test_an_unknown_agent_is_named():
    env = cory_env.env(task=make_test_task(), tokenizer=TOK)
    env.reset(options={"query": "I loved"})
    message = "unknown agent 'nobody': this env's agents are \\['pioneer_0', 'observer_0'\\]"
    with pytest.raises(ValueError, match=message):
        env.observe("nobody")  # was "'nobody' is not in list"
    with pytest.raises(ValueError, match="unknown agent 0"):
        env.unwrapped.text(0)
    venv = CoryTextVecEnv(2, task=make_test_task(), tokenizer=TOK)
    with pytest.raises(ValueError, match="unknown agent 'observer_1'"):
        venv.response_ids("observer_1")


def test_vector_queries_given_as_one_string_are_refused():
    venv = CoryTextVecEnv(2, task=make_test_task(), tokenizer=TOK)
    with pytest.raises(TypeError, match="options\\['queries'\\] must be a list of 2 entries"):
        venv.reset(options={"queries": "ab"})  # was two one-letter queries, "a" and "b"
    with pytest.raises(TypeError, match="options\\['answers'\\] must be a list of 2 entries"):
        venv.reset(options={"queries": ["I loved", "The plot was"], "answers": "48"})
    assert venv.agent_selection is None


def test_vector_ragged_actions_get_the_envs_message():
    venv = CoryTextVecEnv(2, task=make_test_task(), tokenizer=TOK)
    venv.reset(options={"queries": ["I loved", "The plot was"]})
    with pytest.raises(ValueError, match="expected 2 actions \\(one per env\\), got a ragged"):
        venv.step([FILM, [FILM, EOS]])  # was numpy's "inhomogeneous shape" message
    assert venv.active.tolist() == [True, True]
    venv.step(np.array([FILM, EOS]))
    assert [r.tolist() for r in venv.response_ids("pioneer_0")] == [[FILM], [EOS]]
