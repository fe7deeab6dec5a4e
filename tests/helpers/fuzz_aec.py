"""A Hypothesis state machine over the wrapped AEC env (``cory_env.env``): random call
sequences checked, after every call, against :class:`helpers.fuzz.EpisodeModel`; every
sequence ends with PettingZoo's ``api_test`` on the same env."""

from __future__ import annotations

import contextlib
import io
import warnings
from typing import Any

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from pettingzoo.test import api_test

import cory_env
from cory_env import RewardError, seat_prefix

from .fuzz import (
    BAD_ACTIONS,
    BAD_QUERIES,
    COUNTS,
    FORMS,
    MAX_PROMPT,
    QUERY_TEXTS,
    REWARD_FAILS,
    SEEDS,
    TOK,
    TOKENS,
    EpisodeModel,
    FlakyReward,
    assert_same,
    bad_limits,
    check_info,
    limits_options,
    query_error,
    snapshot,
)
from .tasks import QUERIES, make_test_task

OVER = "no agents left"
KNOWN = {str(q): q.answer for q in QUERIES}


class AecFuzz(RuleBasedStateMachine):
    """The wrapped AEC env of a K-role chain in one reward mode, against the model."""

    def __init__(self, k: int, mode: str) -> None:
        super().__init__()
        self.k, self.mode, self.env = k, mode, None
        self.reward = FlakyReward()

    @initialize(
        render_mode=st.sampled_from([None, "ansi", "human"]),
        max_new=st.integers(1, 4),
        info_texts=st.booleans(),
        reset=st.sampled_from([True, True, True, False]),
    )
    def build(self, render_mode: str | None, max_new: int, info_texts: bool, reset: bool) -> None:
        task = make_test_task(reward_fn=self.reward, max_new_tokens=max_new)
        self.env = cory_env.env(
            task=task,
            tokenizer=TOK,
            num_agents=self.k,
            reward_mode=self.mode,
            render_mode=render_mode,
            info_texts=info_texts,
        )
        self.raw = self.env.unwrapped
        self.agents = list(self.raw.possible_agents)
        self.prefixes = [seat_prefix(a) for a in self.agents]
        self.model = EpisodeModel(task, self.k, 1, self.mode, max_new)
        self.left: list[str] = []  # the agents not yet removed
        self.just_ended = False  # rewards hold the final ones until the first dead step
        self.length = MAX_PROMPT + max_new
        self.spaces = [
            (self.env.observation_space(a), self.env.action_space(a)) for a in self.agents
        ]
        if reset:  # most sequences start in an episode; the others test calls before reset
            self.start(None, None, None, None, None)

    # -- helpers ------------------------------------------------------------------------
    def state(self, rng: bool = True) -> dict[str, Any]:
        """The raw env's whole state (its episodes too) and the wrapper's reset flag."""
        skip = ("_episodes",) if rng else ("_episodes", "np_random", "np_random_seed")
        out = snapshot(self.raw, skip)
        out["episodes"] = snapshot(self.raw._episodes)
        out["has_reset"] = self.env._has_reset
        return out

    def refused(self, call: Any, error: Any, match: str, rng: bool = True) -> None:
        """``call()`` raises ``error`` (message ``match``) and changes nothing; a refused
        reset may have re-seeded the env's generator (``rng=False``)."""
        COUNTS["refused"] += 1
        before = self.state(rng)
        with pytest.raises(error, match=match):
            call()
        assert_same(before, self.state(rng))

    def start(self, seed: int | None, options: Any, text: Any, answer: Any, limits: Any) -> None:
        """Reset with ``options``; the model starts the same episode."""
        error = None if text is None else query_error(text)
        if error is not None:
            return self.refused(lambda: self.env.reset(seed, options), *error, rng=False)
        self.env.reset(seed=seed, options=options)
        if text is None:  # drawn from the task's train split
            query = self.raw.query
            assert query in KNOWN
            text, answer = str(query), query.answer
        elif answer is None:
            answer = KNOWN.get(text)
        self.model.start([text], [answer], limits or [self.model.max_new] * self.k)
        self.left, self.just_ended = list(self.agents), False
        return None

    # -- resets -------------------------------------------------------------------------
    @rule(seed=SEEDS, data=st.data())
    def reset(self, seed: int | None, data: Any) -> None:
        COUNTS["reset"] += 1
        if data.draw(st.integers(0, 3), "which reset") == 0:
            return self.reset_bad_limits(seed, data)
        options = data.draw(st.sampled_from([None, {}, {"options": 1}]), "options")
        text = answer = limits = None
        if data.draw(st.booleans(), "force a query"):
            text = data.draw(st.one_of(QUERY_TEXTS, BAD_QUERIES), "query")
            answer = data.draw(st.sampled_from([None, "4", "12"]), "answer")
            options = {"query": text, "answer": answer}
        if data.draw(st.booleans(), "turn lengths"):
            value, limits = data.draw(limits_options(self.k, self.model.max_new), "limits")
            options = {**(options or {}), "max_new_tokens": value}
        return self.start(seed, options, text, answer, limits)

    def reset_bad_limits(self, seed: int | None, data: Any) -> None:
        """A reset with an invalid ``max_new_tokens`` option."""
        value, error, match = data.draw(bad_limits(self.k, self.model.max_new), "limits")
        options: dict[str, Any] = {"max_new_tokens": value}
        if data.draw(st.booleans(), "force a query"):
            options["query"] = data.draw(st.sampled_from(sorted(KNOWN)), "query")
        self.refused(lambda: self.env.reset(seed, options), error, match, rng=False)

    # -- steps --------------------------------------------------------------------------
    def step_with(self, action: Any, token: int | None, error: Any = None, match: str = "") -> None:
        """Step ``action`` (``token``: its id when valid) and check what follows."""
        COUNTS["step"] += 1
        m, step = self.model, lambda: self.env.step(action)
        if not self.env._has_reset:
            return self.refused(step, AssertionError, "before step")
        if not self.left:
            if action is None:  # PettingZoo's rule: a warning, nothing changes
                before = self.state()
                self.env.step(None)
                return assert_same(before, self.state())
            return self.refused(step, RuntimeError, OVER)
        if m.done:
            if action is not None:
                return self.refused(step, RuntimeError, "only valid action is None")
            COUNTS["dead_step"] += 1
            self.env.step(None)
            self.left.pop(0)
            self.just_ended = False
            return None
        if error is not None:
            return self.refused(step, error, match)
        assert token is not None
        if m.ends_episode([token]):
            self.reward.episode_end()
            if self.reward.mode:
                COUNTS["reward_failure"] += 1
                self.refused(step, RewardError, REWARD_FAILS[self.reward.mode])
                self.reward.mode = None  # one failure: the same step, retried, succeeds
                COUNTS["step"] += 1
        self.env.step(action)
        m.apply([token])
        if m.done:
            COUNTS["episode_end"] += 1
            self.just_ended = True
        return None

    @rule(token=TOKENS, form=FORMS)
    def step_token(self, token: int, form: Any) -> None:
        self.step_with(form(token), token)

    @rule(tokens=st.lists(TOKENS, min_size=2, max_size=12), form=FORMS, data=st.data())
    def step_tokens(self, tokens: list[int], form: Any, data: Any) -> None:
        for token in tokens:  # runs of valid steps: episodes reach their end
            if self.model.done and data.draw(st.integers(0, 3), "dead step") > 0:
                self.step_with(None, None)  # mostly the dead steps, once it is over
            else:
                self.step_with(form(token), token)

    @rule(bad=BAD_ACTIONS)
    def step_bad(self, bad: tuple[Any, Any, str]) -> None:
        self.step_with(*bad[:1], None, *bad[1:])

    @rule()
    def step_none(self) -> None:
        self.step_with(None, None, TypeError, "got None")

    @rule()
    def step_none_too(self) -> None:
        self.step_with(None, None, TypeError, "got None")  # the dead steps once it is over

    @rule(mode=st.sampled_from(["raise", "nan"]))
    def arm_reward_failure(self, mode: str) -> None:
        self.reward.mode = mode  # the next episode end fails once (atomically)

    # -- the other calls ----------------------------------------------------------------
    @rule(observe=st.booleans())
    def last(self, observe: bool) -> None:
        COUNTS["last"] += 1
        if not self.env._has_reset:
            return self.refused(lambda: self.env.last(observe), AttributeError, "before reset")
        if not self.left:
            return self.refused(lambda: self.env.last(observe), RuntimeError, OVER)
        obs, reward, term, trunc, info = self.env.last(observe)
        agent = self.raw.agent_selection
        assert reward == self.raw._cumulative_rewards[agent] and info == self.raw.infos[agent]
        assert (term, trunc) == (self.model.done, False)
        if observe:
            assert_same(obs, self.raw.observe(agent))
        else:
            assert obs is None
        return None

    @rule(agent=st.one_of(st.integers(0, 3), st.sampled_from(["nobody", "observer_9", None])))
    def observe(self, agent: Any) -> None:
        COUNTS["observe"] += 1
        if isinstance(agent, int) and agent < self.k:
            agent = self.agents[agent]
        if not self.env._has_reset:
            return self.refused(lambda: self.env.observe(agent), AssertionError, "before observe")
        if agent not in self.agents:
            return self.refused(lambda: self.env.observe(agent), ValueError, "unknown agent")
        self.check_observation(self.agents.index(agent))
        return None

    @rule()
    def render(self) -> None:
        COUNTS["render"] += 1
        if not self.env._has_reset:
            return self.refused(self.env.render, AssertionError, "before render")
        before, mode = self.state(), self.raw.render_mode
        if mode is None:
            with pytest.warns(UserWarning, match="without specifying any render mode"):
                assert self.env.render() is None
        elif mode == "ansi":
            self.check_render(self.env.render())
        else:
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                assert self.env.render() is None
            self.check_render(out.getvalue().removesuffix("\n"))
        assert_same(before, self.state())
        return None

    @rule(then_reset=st.booleans())
    def close(self, then_reset: bool) -> None:
        COUNTS["close"] += 1
        before = self.state()
        assert self.env.close() is None
        assert_same(before, self.state())
        if then_reset:
            COUNTS["reset"] += 1
            self.start(None, None, None, None, None)

    # -- checks -------------------------------------------------------------------------
    def check_render(self, text: str) -> None:
        m = self.model
        if m.phase is None:  # a refused first reset: no episode yet
            assert text == ""
            return
        lines = text.split("\n")
        roles = min(m.phase, self.k - 1) + 1
        assert lines[0] == f"query: {m.queries[0]!r}"
        assert lines[1 : 1 + roles] == [m.line(r, self.agents[r]) for r in range(roles)]
        assert len(lines) == 1 + roles + m.done

    def check_observation(self, role: int) -> None:
        agent = self.agents[role]
        obs = self.env.observe(agent)
        assert self.env.observation_space(agent).contains(obs)
        ids, n = self.model.observation(role, 0, self.length)
        assert obs["input_ids"].tolist() == ids
        assert obs["attention_mask"].tolist() == [1] * n + [0] * (self.length - n)

    @invariant()
    def matches_the_model(self) -> None:
        if self.env is None:
            return
        if not self.env._has_reset:
            with pytest.raises(AttributeError, match="before reset"):
                _ = self.env.agents
            return
        raw, m, left = self.raw, self.model, self.left
        for a, (obs_space, act_space) in zip(self.agents, self.spaces, strict=True):
            assert self.env.observation_space(a) is obs_space
            assert self.env.action_space(a) is act_space
        assert raw.agents == left
        for table in (raw.terminations, raw.truncations, raw.rewards, raw.infos):
            assert list(table) == left
        assert list(raw._cumulative_rewards) == left
        if left:
            assert raw.agent_selection == (left[0] if m.done else self.agents[m.phase])
            check_info(m, raw.infos[left[0]], 0, self.prefixes)
        for a in left:
            final = float(m.final[self.agents.index(a), 0]) if m.done else 0.0
            assert raw.terminations[a] is m.done and raw.truncations[a] is False
            assert raw.rewards[a] == (final if self.just_ended else 0.0)
            assert raw._cumulative_rewards[a] == final
            assert raw.infos[a] == raw.infos[left[0]]
        if m.done and left:  # the reward mode: every role the sum of all, or each its own
            own = [raw.infos[left[0]][f"{p}_reward"] for p in self.prefixes]
            for a in left:
                mine = own[self.agents.index(a)]
                want = sum(own) if self.mode == "cooperative" else mine
                assert raw._cumulative_rewards[a] == want
        for role in range(self.k):
            self.check_observation(role)

    def teardown(self) -> None:
        if self.env is None:
            return
        COUNTS["sequences"] += 1
        self.reward.mode = None
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            api_test(self.env, num_cycles=10)
