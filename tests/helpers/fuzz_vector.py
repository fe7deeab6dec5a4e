"""A Hypothesis state machine over :class:`cory_env.CoryTextVecEnv`: arrays of actions of
mixed validity and malformed arrays, resets with bad queries or turn lengths, checked
against :class:`helpers.fuzz.EpisodeModel` after every call.

The vector env's contract for mixed validity: only the entries of active episodes are
range-checked (an inactive episode's action is ignored), and a step with any invalid
active entry, a wrong shape or a non-integer dtype is refused whole, changing nothing.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any

import numpy as np
import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from cory_env import CoryTextVecEnv, RewardError, seat_prefix

from .fuzz import (
    BAD_QUERIES,
    COUNTS,
    EOS,
    FILM,
    MAX_PROMPT,
    QUERY_TEXTS,
    REWARD_FAILS,
    SEEDS,
    TOK,
    TOKENS,
    VOCAB,
    EpisodeModel,
    FlakyReward,
    assert_same,
    bad_limits,
    check_info,
    decode,
    limits_options,
    query_error,
    snapshot,
)
from .tasks import QUERIES, make_test_task

KNOWN = {str(q): q.answer for q in QUERIES}
ENTRY = st.one_of(
    *[TOKENS.map(lambda t: (t, True))] * 3,
    st.integers(VOCAB, 2**31 - 1).map(lambda t: (t, False)),
    st.integers(-(2**31), -1).map(lambda t: (t, False)),
)
"""One entry of an action array: ``(value, valid)``."""


def malformed(b: int) -> st.SearchStrategy[tuple[Any, type, str]]:
    """An action array refused whatever the episodes' state: ``(actions, error, message)``."""
    dtype = r"integer token ids in \[0, 320\), got dtype"
    shape = f"expected {b} actions \\(one per env\\)"
    return st.sampled_from(
        [
            (np.full(b, 1.0), TypeError, f"{dtype} float64"),
            (np.zeros(b, bool), TypeError, f"{dtype} bool"),
            ([None] * b, TypeError, f"{dtype} object"),
            (["1"] * b, TypeError, f"{dtype} <U1"),
            ([10**30] * b, TypeError, f"{dtype} object"),
            ([FILM] * (b + 1), ValueError, f"{shape}, got shape \\({b + 1},\\)"),
            (np.full((b, 1), FILM), ValueError, f"{shape}, got shape \\({b}, 1\\)"),
            (FILM, ValueError, f"{shape}, got shape \\(\\)"),
            (None, ValueError, f"{shape}, got shape \\(\\)"),
            ([FILM, [FILM, EOS]] + [FILM] * (b - 1), ValueError, f"{shape}, got a ragged"),
        ]
    )


class VecFuzz(RuleBasedStateMachine):
    """B episodes of a K-role chain in one reward mode, against the model."""

    def __init__(self, k: int, mode: str) -> None:
        super().__init__()
        self.k, self.mode, self.venv = k, mode, None
        self.reward = FlakyReward()

    @initialize(
        b=st.integers(1, 3),
        max_new=st.integers(1, 3),
        render_mode=st.sampled_from([None, "ansi", "human"]),
    )
    def build(self, b: int, max_new: int, render_mode: str | None) -> None:
        task = make_test_task(reward_fn=self.reward, max_new_tokens=max_new)
        self.venv = CoryTextVecEnv(
            b,
            task=task,
            tokenizer=TOK,
            num_agents=self.k,
            reward_mode=self.mode,
            render_mode=render_mode,
            info_texts=True,
        )
        self.b, self.agents = b, list(self.venv.possible_agents)
        self.prefixes = [seat_prefix(a) for a in self.agents]
        self.model = EpisodeModel(task, self.k, b, self.mode, max_new)
        self.length = MAX_PROMPT + max_new

    def state(self) -> dict[str, Any]:
        return snapshot(self.venv._episodes)

    def refused(self, call: Any, error: Any, match: str) -> None:
        COUNTS["refused"] += 1
        before = self.state()
        with pytest.raises(error, match=match):
            call()
        assert_same(before, self.state())

    def check_obs(self, obs: dict[str, np.ndarray]) -> None:
        """A reset's or step's observation: the acting role's (the last one's once done)."""
        m = self.model
        assert m.phase is not None
        role = min(m.phase, self.k - 1)
        for i in range(self.b):
            row = {key: obs[key][i] for key in obs}
            assert self.venv.single_observation_space.contains(row)
            ids, n = m.observation(role, i, self.length)
            assert row["input_ids"].tolist() == ids and int(row["attention_mask"].sum()) == n

    # -- resets -------------------------------------------------------------------------
    @rule(seed=SEEDS, data=st.data())
    def reset(self, seed: int | None, data: Any) -> None:
        COUNTS["reset"] += 1
        if data.draw(st.integers(0, 3), "which reset") == 0:
            return self.reset_bad(seed, data)
        b, m = self.b, self.model
        options: dict[str, Any] | None = None
        texts = answers = limits = None
        if data.draw(st.booleans(), "force queries"):
            texts = data.draw(st.lists(st.one_of(QUERY_TEXTS, BAD_QUERIES), min_size=b, max_size=b))
            answers = data.draw(st.lists(st.sampled_from([None, "4"]), min_size=b, max_size=b))
            options = {"queries": texts, "answers": answers}
        if data.draw(st.booleans(), "turn lengths"):
            value, limits = data.draw(limits_options(self.k, m.max_new), "limits")
            options = {**(options or {}), "max_new_tokens": value}
        if texts is not None:
            errors = [query_error(t) for t in texts]
            kinds = [e for e in errors if e is not None and e[0] is TypeError] or errors
            error = next((e for e in kinds if e is not None), None)
            if error is not None:
                return self.refused(lambda: self.venv.reset(seed, options), *error)
        obs, infos = self.venv.reset(seed=seed, options=options)
        if texts is None:
            texts = [str(q) for q in infos["query"]]
            answers = [KNOWN[t] for t in texts]
        answers = [KNOWN.get(t) if a is None else a for t, a in zip(texts, answers, strict=True)]
        m.start(texts, answers, limits or [m.max_new] * self.k)
        self.check_obs(obs)
        return None

    def reset_bad(self, seed: int | None, data: Any) -> None:
        """A reset with bad options: wrong counts, a string for a list, bad turn lengths."""
        b, fine = self.b, sorted(KNOWN)[: self.b] + ["Fine"] * 2
        count = f"options\\['queries'\\] / \\['answers'\\] need {b} entries"
        value, error, match = data.draw(
            st.one_of(
                bad_limits(self.k, self.model.max_new).map(
                    lambda v: ({"max_new_tokens": v[0]}, *v[1:])
                ),
                st.sampled_from(
                    [
                        ({"queries": fine[: b + 1]}, ValueError, count),
                        ({"queries": fine[:b], "answers": ["1"] * (b + 1)}, ValueError, count),
                        ({"queries": "x" * b}, TypeError, r"options\['queries'\] must be a list"),
                        ({"queries": fine[:b], "answers": "4" * b}, TypeError, "must be a list"),
                    ]
                ),
            )
        )
        self.refused(lambda: self.venv.reset(seed, value), error, match)

    # -- steps --------------------------------------------------------------------------
    def step_with(self, actions: Any, valid: list[int] | None, error: Any, match: str) -> None:
        """Step ``actions``; ``valid``: their ids when every active entry is valid."""
        COUNTS["step"] += 1
        m, step = self.model, lambda: self.venv.step(actions)
        if m.phase is None:
            return self.refused(step, RuntimeError, r"call reset\(\) before step\(\)")
        if m.done:
            return self.refused(step, RuntimeError, "agent_selection is None")
        if valid is None:
            return self.refused(step, error, match)
        if m.ends_episode(valid):
            self.reward.episode_end()
            if self.reward.mode:
                COUNTS["reward_failure"] += 1
                self.refused(step, RewardError, REWARD_FAILS[self.reward.mode])
                self.reward.mode = None  # one failure: the same step, retried, succeeds
                COUNTS["step"] += 1
        obs, rewards, terms, truncs, infos = self.venv.step(actions)
        m.apply(valid)
        if m.done:
            COUNTS["episode_end"] += 1
        self.check_obs(obs)
        for r, a in enumerate(self.agents):
            assert rewards[a].tolist() == (m.final[r].tolist() if m.done else [0.0] * self.b)
            assert terms[a].tolist() == [m.done] * self.b and not truncs[a].any()
        assert infos.keys() == self.venv.infos.keys()
        return None

    @rule(data=st.data())
    def step_mixed(self, data: Any) -> None:
        entries = data.draw(st.lists(ENTRY, min_size=self.b, max_size=self.b), "entries")
        if data.draw(st.booleans(), "valid where active"):  # invalid only where ignored
            entries = [e if not on else (FILM, True) for e, on in zip(entries, self.model.active)]
        values = [v for v, _ in entries]
        forms = [list, lambda v: np.array(v, np.int64), lambda v: np.array(v, np.int32)]
        if min(values) >= 0:
            forms.append(lambda v: np.array(v, np.uint32))
        actions = data.draw(st.sampled_from(forms), "form")(values)
        active = self.model.active
        bad = [i for i, (v, ok) in enumerate(entries) if active[i] and not ok]
        if bad:
            match = f"action {values[bad[0]]} of env {bad[0]} is out of range"
            return self.step_with(actions, None, ValueError, match)
        if any(not ok for _, ok in entries):
            COUNTS["mixed_ignored"] += 1
        return self.step_with(actions, values, None, "")

    @rule(data=st.data())
    def step_runs(self, data: Any) -> None:
        for _ in range(data.draw(st.integers(2, 8), "run")):  # episodes reach their end
            values = data.draw(st.lists(TOKENS, min_size=self.b, max_size=self.b), "tokens")
            ignored = [i for i, on in enumerate(self.model.active) if not on]
            if ignored and data.draw(st.booleans(), "invalid where ignored"):
                COUNTS["mixed_ignored"] += 1
                for i in ignored:
                    values[i] = data.draw(st.sampled_from([VOCAB, 10**6, -1, -(2**40)]))
            self.step_with(np.array(values), values, None, "")

    @rule(data=st.data())
    def step_malformed(self, data: Any) -> None:
        actions, error, match = data.draw(malformed(self.b))
        self.step_with(actions, None, error, match)

    @rule(mode=st.sampled_from(["raise", "nan"]))
    def arm_reward_failure(self, mode: str) -> None:
        self.reward.mode = mode  # the next episode end fails once (atomically)

    # -- the other calls ----------------------------------------------------------------
    @rule()
    def render(self) -> None:
        COUNTS["render"] += 1
        before, m = self.state(), self.model
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            text = self.venv.render()
        if self.venv.render_mode == "human":
            text = out.getvalue().removesuffix("\n") if m.phase is not None else None
        if self.venv.render_mode is None or m.phase is None:
            assert text is None
        else:
            assert text.count("[env ") == self.b
            for i in range(self.b):
                assert f"[env {i}]\nquery: {m.queries[i]!r}" in text
                assert m.line(0, self.agents[0], i) in text
        assert_same(before, self.state())

    @rule()
    def close(self) -> None:
        COUNTS["close"] += 1
        before = self.state()
        assert self.venv.close() is None
        assert_same(before, self.state())

    @rule(agent=st.sampled_from(["pioneer_0", "observer_0", "observer_2", "nobody"]))
    def answers(self, agent: str) -> None:
        COUNTS["answers"] += 1
        if agent not in self.agents:
            self.refused(lambda: self.venv.texts(agent), ValueError, "unknown agent")
            return self.refused(lambda: self.venv.response_ids(agent), ValueError, "unknown agent")
        tokens = self.model.tokens[self.agents.index(agent)]
        assert [r.tolist() for r in self.venv.response_ids(agent)] == tokens
        assert self.venv.texts(agent) == [decode(t) for t in tokens]
        return None

    @invariant()
    def matches_the_model(self) -> None:
        if self.venv is None:
            return
        v, m = self.venv, self.model
        if m.phase is None:
            assert v.agent_selection is None
            return
        assert v.agent_selection == (None if m.done else self.agents[m.phase])
        assert v.active.tolist() == m.active
        for r, a in enumerate(self.agents):
            assert [x.tolist() for x in v.response_ids(a)] == m.tokens[r]
            assert v.rewards[a].tolist() == (m.final[r].tolist() if m.done else [0.0] * self.b)
        for i in range(self.b):
            check_info(m, v.info(i), i, self.prefixes)
        role = min(m.phase, self.k - 1)
        assert [p.tolist() for p in v.prompt_ids] == [m.prompts[role][i] for i in range(self.b)]

    def teardown(self) -> None:
        """The env is usable after any sequence: a fresh episode plays to its rewards."""
        if self.venv is None:
            return
        COUNTS["sequences"] += 1
        self.reward.mode = None
        self.model.start(["I loved"] * self.b, ["x"] * self.b, [self.model.max_new] * self.k)
        self.venv.reset(options={"queries": ["I loved"] * self.b, "answers": ["x"] * self.b})
        while not self.model.done:
            self.step_with([FILM] * self.b, [FILM] * self.b, None, "")
            self.matches_the_model()
        assert self.venv.rewards[self.agents[0]].tolist() == self.model.final[0].tolist()
        per_role = float(self.model.max_new)  # every role wrote FILM max_new times
        want = per_role * self.k if self.mode == "cooperative" else per_role
        assert self.model.final[:, 0].tolist() == [want] * self.k
