"""What callers hand an episode, drawn or checked: its query, its turn lengths, its actions.

Shared by :class:`cory_env.env.CoryTextEnv` and :class:`cory_env.vector.CoryTextVecEnv`, so
both draw the same queries and refuse the same bad input with the same errors.
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np

from cory_env.config import EnvConfig, positive_int
from cory_env.tasks.base import Query, Task


def draw_query(task: Task, split: str, rng: np.random.Generator) -> Query:
    """One query of ``split``, drawn uniformly with ``rng``."""
    pool = task.queries(split)
    return task.lookup(pool[int(rng.integers(len(pool)))])


def forced_query(task: Task, text: Any, answer: Any = None) -> Query:
    """The query given in reset options, with its gold answer (given, or looked up)."""
    if not isinstance(text, str):
        raise TypeError(f"a query must be a str, got {type(text).__name__}")
    return Query(text, answer) if answer is not None else task.lookup(text)


def turn_limits(cfg: EnvConfig, value: Any) -> np.ndarray:
    """This episode's ``max_new_tokens`` per role (reset option: one int for every role, or
    one per role in chain order), each within the env's bound."""
    k = cfg.num_agents
    if value is None:
        return np.full(k, cfg.max_new_tokens, np.int64)
    scalar = isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
    values = (
        [value] * k
        if scalar
        else list(value)
        if isinstance(value, (list, tuple, np.ndarray))
        else [value]
    )
    if len(values) != k:
        raise ValueError(
            f"options['max_new_tokens'] needs one int or {k} (one per role), got {value!r}"
        )
    limits = np.array([positive_int(v, "options['max_new_tokens']") for v in values], np.int64)
    if limits.max() > cfg.max_new_tokens:
        raise ValueError(
            f"options['max_new_tokens']={value} exceeds the env's max_new_tokens={cfg.max_new_tokens} "
            "(the observation length is fixed at construction)"
        )
    return limits


def _whose(owner: str | None) -> str:
    return f" ({owner}'s vocabulary)" if owner else ""


def check_token(action: Any, vocab_size: int, owner: str | None = None) -> int:
    """One action as a token id, or a clear TypeError / ValueError (naming ``owner``, the
    agent whose vocabulary it is, where given)."""
    if isinstance(action, np.ndarray) and action.size == 1:
        action = action.reshape(())
    if isinstance(action, (bool, np.bool_)) or action is None:
        raise TypeError(f"action must be an integer token id in [0, {vocab_size}), got {action!r}")
    try:
        token = operator.index(action)
    except TypeError:
        raise TypeError(
            f"action must be an integer token id in [0, {vocab_size}), "
            f"got {type(action).__name__} {action!r}"
        ) from None
    if not 0 <= token < vocab_size:
        raise ValueError(
            f"action {token} is out of range: token ids are in [0, {vocab_size}){_whose(owner)}"
        )
    return token


def check_tokens(
    actions: Any, active: np.ndarray, vocab_size: int, owner: str | None = None
) -> np.ndarray:
    """A (B,) int64 array of actions; only the entries of active episodes are range-checked
    (an error names ``owner``, the agent whose vocabulary it is, where given)."""
    try:
        arr = np.asarray(actions)
    except ValueError:  # a ragged nesting: numpy cannot make one array of it
        raise ValueError(
            f"expected {active.size} actions (one per env), got a ragged nested sequence"
        ) from None
    if arr.shape != active.shape:
        raise ValueError(f"expected {active.size} actions (one per env), got shape {arr.shape}")
    if arr.dtype.kind not in "iu":
        raise TypeError(
            f"actions must be integer token ids in [0, {vocab_size}), got dtype {arr.dtype}"
        )
    live = arr[active]
    if live.size and (live.min() < 0 or live.max() >= vocab_size):
        i = int(np.flatnonzero(active & ((arr < 0) | (arr >= vocab_size)))[0])
        raise ValueError(
            f"action {arr[i]} of env {i} is out of range: token ids are in [0, {vocab_size})"
            f"{_whose(owner)}"
        )
    return arr.astype(np.int64, copy=False)
