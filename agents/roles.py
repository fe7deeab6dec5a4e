"""Role exchange: which learner plays the pioneer and which the observer, and when they swap.

Iterations are counted from 0. After training iteration ``i`` (rollout + both updates)
the trainer asks ``schedule.should_swap(i)``; if true it calls ``roles.swap()`` and
iteration ``i + 1`` is played with the roles exchanged. ``PeriodicSwap(period=k)`` swaps
after iterations ``k-1, 2k-1, ...`` i.e. when ``(i + 1) % k == 0``: each model keeps a role
for exactly ``k`` iterations (the paper's ``T_REx``; 5 by default). So with ``k = 5`` the
initial assignment plays iterations 0-4, the swapped one 5-9, the initial one 10-14, ...

Swapping only exchanges references: no weights move, and each learner keeps its own
optimiser state, KL controller and score statistics (unlike the official code, which
reloaded both models from disk and lost that state at every swap).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from agents.rl.learner import Learner
from cory_env import AGENTS, OBSERVER, PIONEER

__all__ = [
    "OBSERVER",
    "PIONEER",
    "ROLES",
    "NeverSwap",
    "PeriodicSwap",
    "RoleAssignment",
    "SwapSchedule",
    "make_schedule",
]

ROLES: tuple[str, str] = AGENTS
"""The env's agent names (defined in :mod:`cory_env.state`); these are roles, not models."""


@runtime_checkable
class SwapSchedule(Protocol):
    """Decides, after iteration ``iteration`` (0-based), whether the roles are exchanged."""

    def should_swap(self, iteration: int) -> bool: ...


def _check_iteration(iteration: int) -> int:
    if int(iteration) != iteration or iteration < 0:
        raise ValueError(f"iteration must be a non-negative integer, got {iteration!r}")
    return int(iteration)


@dataclass(frozen=True)
class PeriodicSwap:
    """Swap after every ``period`` iterations: ``should_swap(i) == ((i + 1) % period == 0)``."""

    period: int = 5

    def __post_init__(self) -> None:
        if isinstance(self.period, bool) or int(self.period) != self.period or self.period < 1:
            raise ValueError(f"period must be a positive integer, got {self.period!r}")

    def should_swap(self, iteration: int) -> bool:
        return (_check_iteration(iteration) + 1) % self.period == 0


@dataclass(frozen=True)
class NeverSwap:
    """No role exchange (the ablation): the initial pioneer stays pioneer."""

    def should_swap(self, iteration: int) -> bool:
        _check_iteration(iteration)
        return False


def make_schedule(
    spec: str | int | SwapSchedule | None = "periodic", **kwargs: Any
) -> SwapSchedule:
    """Build a schedule from a name, a period, or pass one through.

    - a :class:`SwapSchedule` instance: returned as is;
    - an ``int`` ``k >= 1`` (or its string, e.g. ``"5"``): ``PeriodicSwap(k)``;
    - ``0``, ``None``, ``"never"``, ``"none"``: ``NeverSwap()``;
    - ``"periodic"``: ``PeriodicSwap(**kwargs)`` (``period`` defaults to 5).
    """
    if spec is None:
        return NeverSwap()
    if isinstance(spec, bool):
        raise TypeError("make_schedule: a bool is not a schedule")
    if isinstance(spec, int):
        return NeverSwap() if spec == 0 else PeriodicSwap(spec)
    if isinstance(spec, str):
        name = spec.strip().lower()
        if name in ("never", "none"):
            return NeverSwap(**kwargs)
        if name == "periodic":
            return PeriodicSwap(**kwargs)
        if name.isdigit():
            return make_schedule(int(name))
        raise ValueError(f"unknown swap schedule {spec!r}; use 'periodic', 'never' or a period")
    if isinstance(spec, SwapSchedule):
        return spec
    raise TypeError(f"cannot make a swap schedule from {spec!r}")


class RoleAssignment:
    """Maps the roles ``pioneer_0`` / ``observer_0`` to two distinct learners.

    Built from ``{"pioneer_0": a, "observer_0": b}`` or ``(a, b)`` (``a`` starts as the
    pioneer). ``learners`` keeps that construction order forever, so learner ``i`` is the
    same model for the whole run (checkpoint learners by that index); :meth:`swap` only flips
    which index plays which role.
    """

    def __init__(self, learners: Mapping[str, Learner] | Sequence[Learner]) -> None:
        if isinstance(learners, Mapping):
            if set(learners) != set(ROLES):
                raise ValueError(f"expected exactly the roles {ROLES}, got {sorted(learners)}")
            pair = (learners[PIONEER], learners[OBSERVER])
        else:
            pair = tuple(learners)
            if len(pair) != 2:
                raise ValueError(f"expected two learners, got {len(pair)}")
        if pair[0] is pair[1]:
            raise ValueError("the pioneer and the observer must be distinct learners")
        self._learners: tuple[Learner, Learner] = (pair[0], pair[1])
        self._pioneer = 0  # index into _learners of the learner playing the pioneer
        self._num_swaps = 0

    @property
    def learners(self) -> tuple[Learner, Learner]:
        """The two learners in construction order (independent of the current roles)."""
        return self._learners

    @property
    def pioneer(self) -> Learner:
        return self._learners[self._pioneer]

    @property
    def observer(self) -> Learner:
        return self._learners[1 - self._pioneer]

    @property
    def num_swaps(self) -> int:
        return self._num_swaps

    def __getitem__(self, role: str) -> Learner:
        return self._learners[self.index(role)]

    def index(self, role: str) -> int:
        """Which of :attr:`learners` (0 or 1) plays ``role`` now."""
        if role == PIONEER:
            return self._pioneer
        if role == OBSERVER:
            return 1 - self._pioneer
        raise KeyError(f"unknown role {role!r}; roles are {ROLES}")

    def role_of(self, learner: Learner) -> str:
        """The role ``learner`` (by identity) plays now."""
        for role in ROLES:
            if self[role] is learner:
                return role
        raise KeyError("this learner is not part of the assignment")

    def items(self) -> list[tuple[str, Learner]]:
        """``[(role, learner), ...]`` in env order (pioneer first)."""
        return [(role, self[role]) for role in ROLES]

    def as_dict(self) -> dict[str, Learner]:
        return dict(self.items())

    def swap(self) -> None:
        """Exchange the roles: O(1), references only."""
        self._pioneer = 1 - self._pioneer
        self._num_swaps += 1

    def maybe_swap(self, schedule: SwapSchedule, iteration: int) -> bool:
        """Swap if ``schedule.should_swap(iteration)``; returns whether it did."""
        if schedule.should_swap(iteration):
            self.swap()
            return True
        return False

    def state_dict(self) -> dict[str, int]:
        """Which learner (index into :attr:`learners`) plays each role, and the swap count."""
        return {
            "pioneer": self._pioneer,
            "observer": 1 - self._pioneer,
            "num_swaps": self._num_swaps,
        }

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        pioneer = int(state["pioneer"])
        if pioneer not in (0, 1) or int(state.get("observer", 1 - pioneer)) != 1 - pioneer:
            raise ValueError(f"invalid role state {dict(state)!r}")
        self._pioneer = pioneer
        self._num_swaps = int(state.get("num_swaps", 0))

    def __repr__(self) -> str:
        return f"RoleAssignment(pioneer=learners[{self._pioneer}], observer=learners[{1 - self._pioneer}], num_swaps={self._num_swaps})"
