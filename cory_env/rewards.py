"""Reward functions (batch in, float32 array out) and reward modes.

A reward function is any callable ``(queries, responses) -> array`` of one float per
pair. Named ones are built by :func:`make_reward`; :func:`score` calls one and checks its
output at the boundary, so a faulty reward raises :class:`RewardError` instead of
corrupting a training run. :func:`combine` turns the two per-role rewards into what
each role receives (``cooperative``: both get ``r(q,a1)+r(q,a2)``, the paper's setting).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from cory_env.tasks.base import RewardFn

REWARD_MODES = ("cooperative", "independent")


class RewardError(RuntimeError):
    """A reward function raised, or returned something other than finite floats."""


_REWARDS: dict[str, Callable[..., RewardFn]] = {}


def register_reward(name: str, factory: Callable[..., RewardFn]) -> None:
    """Make ``make_reward(name, **kwargs)`` call ``factory(**kwargs)``."""
    _REWARDS[name] = factory


def available_rewards() -> list[str]:
    """Names accepted by :func:`make_reward`."""
    return sorted(_REWARDS)


def make_reward(spec: str | RewardFn, **kwargs: Any) -> RewardFn:
    """A reward function from a registered name (``vader``, ``hf-classifier``,
    ``answer-match``) or a custom callable, returned as is."""
    if callable(spec):
        if kwargs:
            raise TypeError("keyword arguments are only accepted with a reward name")
        return spec
    if not isinstance(spec, str) or spec not in _REWARDS:
        raise ValueError(f"unknown reward {spec!r}; available: {', '.join(available_rewards())}")
    return _REWARDS[spec](**kwargs)


def score(reward_fn: RewardFn, queries: Sequence[str], responses: Sequence[str]) -> np.ndarray:
    """Call ``reward_fn`` and validate its output: a finite float32 array, one per response."""
    if len(queries) != len(responses):
        raise ValueError(f"{len(queries)} queries but {len(responses)} responses")
    name = getattr(reward_fn, "__name__", type(reward_fn).__name__)
    try:
        out = reward_fn(list(queries), list(responses))
    except Exception as exc:  # re-raised with context, nothing swallowed
        raise RewardError(f"reward function {name!r} raised {type(exc).__name__}: {exc}") from exc
    try:
        arr = np.asarray(out, dtype=np.float32).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise RewardError(
            f"reward function {name!r} must return numbers, got {type(out).__name__}"
        ) from exc
    if arr.shape != (len(responses),):
        raise RewardError(
            f"reward function {name!r} returned {arr.size} values for {len(responses)} responses"
        )
    if not np.all(np.isfinite(arr)):
        bad = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise RewardError(
            f"reward function {name!r} returned a non-finite value ({arr[bad]}) at index {bad}"
        )
    return arr


def combine(r_pioneer: np.ndarray, r_observer: np.ndarray, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """What (pioneer, observer) receive under ``mode``, from their individual rewards."""
    if mode == "cooperative":
        total = np.asarray(r_pioneer, np.float32) + np.asarray(r_observer, np.float32)
        return total, total.copy()
    if mode == "independent":
        return np.asarray(r_pioneer, np.float32), np.asarray(r_observer, np.float32)
    raise ValueError(f"unknown reward_mode {mode!r}; expected one of {REWARD_MODES}")


def check_mode(mode: str) -> str:
    """Validate a reward mode name at the boundary."""
    if mode not in REWARD_MODES:
        raise ValueError(f"unknown reward_mode {mode!r}; expected one of {REWARD_MODES}")
    return mode


# Concrete reward functions (vader, hf-classifier, answer-match) are defined below and
# registered with register_reward.
