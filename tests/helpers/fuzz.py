"""What the env fuzz tests share: a reference model of B CORY episodes, call descriptors
(valid and invalid actions, reset options) as Hypothesis strategies, and state snapshots.

The model is written from the env contract (turns end at EOS or the turn length, every
observer reads every earlier answer, rewards per reward mode), not from the env's code, so
a disagreement is a finding.
"""

from __future__ import annotations

import copy
from collections import Counter
from typing import Any

import numpy as np
from hypothesis import strategies as st

from cory_env import Task

from .tasks import BANG, EOS, FILM, QUERIES, THE, film_reward
from .tiny import tiny_tokenizer

TOK = tiny_tokenizer()
VOCAB = len(TOK)
PAD = TOK.pad_token_id
MAX_PROMPT = 24
EOS_CODE, LENGTH_CODE = 1, 3  # cory_env.FINISH: "eos", "length"
ANSWERS = {str(q): q.answer for q in QUERIES}
OUT_OF_RANGE = r"out of range: token ids are in \[0, 320\)"
NOT_INTEGER = r"integer token id in \[0, 320\)|token id in \[0, 320\), got None"
REWARD_FAILS = {"raise": "raised ZeroDivisionError: boom", "nan": "non-finite"}
"""The RewardError message of each :class:`FlakyReward` mode."""
COUNTS: Counter[str] = Counter()
"""Calls made on the envs by kind, plus ``sequences`` (Hypothesis examples run)."""


class FlakyReward:
    """``film_reward`` that raises or returns NaN while ``mode`` says so."""

    def __init__(self) -> None:
        self.mode: str | None = None
        self.ends = 0

    def episode_end(self) -> None:
        """Called before an episode's last step: every other one fails first (armed here
        unless a rule armed it already), raising and returning NaN in turn."""
        self.ends += 1
        if self.mode is None and self.ends % 2:
            self.mode = ("raise", "nan")[self.ends // 2 % 2]

    def __call__(self, queries: list[str], responses: list[str]) -> np.ndarray:
        if self.mode == "raise":
            raise ZeroDivisionError("boom")
        out = film_reward(queries, responses)
        if self.mode == "nan":
            out[-1] = np.nan
        return out


def decode(tokens: list[int]) -> str:
    """An answer's text: a final EOS dropped, special tokens skipped."""
    ids = tokens[:-1] if tokens and tokens[-1] == EOS else tokens
    return TOK.decode(ids, skip_special_tokens=True)


def encode(text: str) -> list[int]:
    return list(TOK(text, add_special_tokens=True)["input_ids"])


class EpisodeModel:
    """B episodes of a K-role chain as the contract describes them."""

    def __init__(self, task: Task, k: int, b: int, mode: str, max_new: int) -> None:
        self.task, self.k, self.b, self.mode, self.max_new = task, k, b, mode, max_new
        self.phase: int | None = None
        self.queries: list[str] = []
        self.answers: list[str] = []
        self._clear([max_new] * k)

    def _clear(self, limits: list[int]) -> None:
        k, b = self.k, self.b
        self.limits = list(limits)
        self.tokens: list[list[list[int]]] = [[[] for _ in range(b)] for _ in range(k)]
        self.prompts: list[list[list[int]]] = [[[] for _ in range(b)] for _ in range(k)]
        self.prompt_texts: list[list[str]] = [[""] * b for _ in range(k)]
        self.truncated = [[False] * b for _ in range(k)]
        self.active = [True] * b
        self.own = np.zeros((k, b), np.float32)
        self.final = np.zeros((k, b), np.float32)

    @property
    def done(self) -> bool:
        return self.phase == self.k

    def start(self, queries: list[str], answers: list[str | None], limits: list[int]) -> None:
        self._clear(limits)
        self.phase, self.queries = 0, list(queries)
        self.answers = ["" if a is None else a for a in answers]
        for i, q in enumerate(queries):
            text = self.task.pioneer_prompt(q)
            self.prompt_texts[0][i], self.prompts[0][i] = text, encode(text)

    def ends_episode(self, actions: list[int]) -> bool:
        """Whether these (valid) actions end the last role's turn in every episode."""
        if self.phase != self.k - 1:
            return False
        r = self.phase
        return all(
            not on or a == EOS or len(self.tokens[r][i]) + 1 >= self.limits[r]
            for i, (a, on) in enumerate(zip(actions, self.active, strict=True))
        )

    def apply(self, actions: list[int]) -> None:
        """One token per active episode; inactive episodes' actions are ignored."""
        assert self.phase is not None and not self.done
        r = self.phase
        for i, a in enumerate(actions):
            if self.active[i]:
                self.tokens[r][i].append(int(a))
                if a == EOS or len(self.tokens[r][i]) >= self.limits[r]:
                    self.active[i] = False
        if any(self.active):
            return
        self.phase = r + 1
        self.active = [not self.done] * self.b  # no turn runs once every role has answered
        if self.done:
            self._score()
            return
        for i, q in enumerate(self.queries):
            text = self.task.chain_prompt(q, [decode(self.tokens[j][i]) for j in range(r + 1)])
            ids = encode(text)
            self.prompt_texts[r + 1][i], self.prompts[r + 1][i] = text, ids[-MAX_PROMPT:]
            self.truncated[r + 1][i] = len(ids) > MAX_PROMPT

    def _score(self) -> None:
        for r in range(self.k):
            self.own[r] = film_reward(self.queries, [decode(t) for t in self.tokens[r]])
        if self.mode == "cooperative":
            self.final[:] = self.own.sum(axis=0, dtype=np.float32)  # exact: quarters
        else:
            self.final[:] = self.own

    def observation(self, role: int, i: int, length: int) -> tuple[list[int], int]:
        """The expected ``input_ids`` and number of real tokens of ``role`` in episode ``i``."""
        seq = self.prompts[role][i] + self.tokens[role][i]
        return seq + [PAD] * (length - len(seq)), len(seq)

    def finish(self, role: int, i: int) -> int:
        tokens = self.tokens[role][i]
        return EOS_CODE if tokens and tokens[-1] == EOS else LENGTH_CODE

    def line(self, role: int, agent: str, i: int = 0) -> str:
        """The env's render line of one role."""
        return f"{agent} ({len(self.tokens[role][i])} tokens): {decode(self.tokens[role][i])!r}"


def check_info(model: EpisodeModel, info: dict[str, Any], i: int, prefixes: list[str]) -> None:
    """Episode ``i``'s info against the model (the env docstring's schema)."""
    phase = model.phase
    assert phase is not None
    assert info["turn"] == phase and info["query_tokens"] == len(model.prompts[0][i])
    for r, p in enumerate(prefixes):
        ended = phase > r
        if r > 0:
            assert info[f"{p}_prompt_tokens"] == (len(model.prompts[r][i]) if phase >= r else 0)
            assert info[f"{p}_prompt_truncated"] == model.truncated[r][i]
        assert info[f"{p}_tokens"] == (len(model.tokens[r][i]) if ended else 0)
        code = model.finish(r, i) if ended else 0
        assert info[f"{p}_finish"] == code and info[f"{p}_eos"] == (code == EOS_CODE)
        assert info[f"{p}_reward"] == (float(model.own[r, i]) if model.done else 0.0)
        if "query" in info:
            if r > 0:
                assert info[f"{p}_prompt"] == (model.prompt_texts[r][i] if phase >= r else "")
            assert info[f"{p}_text"] == (decode(model.tokens[r][i]) if ended else "")
    if "query" in info:
        assert info["query"] == model.queries[i] and info["answer"] == model.answers[i]


# -- snapshots ----------------------------------------------------------------------------
_CONSTANT = ("config", "cfg", "task", "tokenizer", "env", "observation_spaces", "action_spaces")


def _copy(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_copy(v) for v in value)
    if isinstance(value, np.random.Generator):
        return copy.deepcopy(value.bit_generator.state)
    return value  # numbers, strings, queries, None: immutable


def snapshot(obj: Any, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """A copy of an object's attributes (its whole state), less ``skip`` and what is fixed
    at construction (config, task, tokenizer, spaces)."""
    return {k: _copy(v) for k, v in vars(obj).items() if k not in skip and k not in _CONSTANT}


def assert_same(a: Any, b: Any, path: str = "state") -> None:
    """Deep equality of two snapshots (arrays by value and dtype), naming where they differ."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        assert isinstance(a, np.ndarray) and isinstance(b, np.ndarray), path
        assert a.dtype == b.dtype and np.array_equal(a, b), path
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), path
        for k in a:
            assert_same(a[k], b[k], f"{path}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), path
        for n, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{path}[{n}]")
    else:
        assert a == b and type(a) is type(b), f"{path}: {a!r} != {b!r}"


# -- call descriptors ---------------------------------------------------------------------
TOKENS = st.one_of(st.sampled_from([EOS, FILM, BANG, THE]), st.integers(0, VOCAB - 1))
FORMS = st.sampled_from(
    [
        int,
        np.int64,
        np.int32,
        np.uint16,
        np.array,
        lambda t: np.array([t]),
        lambda t: np.array([[t]], np.int8 if t < 128 else np.int16),
    ]
)
"""Integer-like forms the AEC env accepts for one token."""

_BIG = st.one_of(st.integers(VOCAB, 10**30), st.integers(-(10**30), -1))
BAD_ACTIONS = st.one_of(
    _BIG.map(lambda v: (v, ValueError, OUT_OF_RANGE)),
    st.integers(-(2**63), 2**63 - 1)
    .filter(lambda v: not 0 <= v < VOCAB)
    .map(lambda v: (np.int64(v), ValueError, OUT_OF_RANGE)),
    st.integers(VOCAB, 2**15 - 1).map(
        lambda v: (np.array([v], np.int16), ValueError, OUT_OF_RANGE)
    ),
    st.floats().map(lambda v: (v, TypeError, NOT_INTEGER)),
    st.floats(width=32).map(lambda v: (np.float32(v), TypeError, NOT_INTEGER)),
    st.integers(0, VOCAB - 1).map(lambda v: (np.array([float(v)]), TypeError, NOT_INTEGER)),
    st.text(max_size=3).map(lambda v: (v, TypeError, NOT_INTEGER)),
    st.binary(max_size=3).map(lambda v: (v, TypeError, NOT_INTEGER)),
    st.lists(TOKENS, max_size=3).map(lambda v: (v, TypeError, NOT_INTEGER)),
    st.lists(TOKENS, max_size=3).map(lambda v: (tuple(v), TypeError, NOT_INTEGER)),
    st.lists(TOKENS, min_size=2, max_size=3).map(lambda v: (np.array(v), TypeError, NOT_INTEGER)),
    st.just((np.array([], np.int64), TypeError, NOT_INTEGER)),
    st.sampled_from([True, False, np.True_, np.array([False])]).map(
        lambda v: (v, TypeError, NOT_INTEGER)
    ),
    st.complex_numbers(max_magnitude=10).map(lambda v: (v, TypeError, NOT_INTEGER)),
    st.just((None, TypeError, NOT_INTEGER)),
)
"""``(action, error, message)`` for an agent whose turn it is."""

QUERY_TEXTS = st.one_of(
    st.sampled_from([str(q) for q in QUERIES]),
    st.text(min_size=1, max_size=12).filter(lambda t: t.strip() != ""),
)
SEEDS = st.one_of(st.none(), st.integers(0, 2**32 - 1))


def query_error(text: Any) -> tuple[type[Exception], str] | None:
    """The error a forced query gets, from the contract's rules (None: accepted)."""
    if not isinstance(text, str):
        return TypeError, "a query must be a str"
    if not text.strip():
        return ValueError, "is empty: a query needs at least one non-blank character"
    if len(encode(text)) > MAX_PROMPT:
        return ValueError, "is too long: its prompt has"
    return None


@st.composite
def limits_options(draw: Any, k: int, max_new: int) -> tuple[Any, list[int]]:
    """A valid ``max_new_tokens`` reset option and the turn lengths it gives each role."""
    if draw(st.booleans()):
        n = draw(st.integers(1, max_new))
        return draw(st.sampled_from([n, np.int64(n)])), [n] * k
    values = draw(st.lists(st.integers(1, max_new), min_size=k, max_size=k))
    return draw(st.sampled_from([values, tuple(values), np.array(values)])), values


def bad_limits(k: int, max_new: int) -> st.SearchStrategy[tuple[Any, type, str]]:
    """An invalid ``max_new_tokens`` reset option, its error and message."""
    name = r"options\['max_new_tokens'\]"
    return st.sampled_from(
        [
            (0, ValueError, f"{name} must be >= 1"),
            (-3, ValueError, f"{name} must be >= 1"),
            (max_new + 1, ValueError, f"exceeds the env's max_new_tokens={max_new}"),
            ([1] * (k + 1), ValueError, f"needs one int or {k}"),
            ([2.0] * k, TypeError, f"{name} must be a positive int"),
            ([1] * (k - 1) + [0], ValueError, f"{name} must be >= 1"),
            ([max_new + 1] + [1] * (k - 1), ValueError, "exceeds the env's max_new_tokens"),
            (2.5, (TypeError, ValueError), name),
            (True, (TypeError, ValueError), name),
            ("3", (TypeError, ValueError), name),
        ]
    )


BAD_QUERIES = st.one_of(
    st.sampled_from(["", "   ", "\n\t", 5, b"I loved", ["I loved"], "film " * 30]),
    st.text(min_size=30, max_size=40),
)
