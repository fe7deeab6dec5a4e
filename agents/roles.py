"""Role exchange: which learner plays which seat of the chain, and when they move.

Iterations are counted from 0. After training iteration ``i`` (rollout + all updates)
the trainer asks ``schedule.should_swap(i)``; if true the roles change (``roles.rotate()``:
every model moves one seat along the chain, the last observer becomes the pioneer; for
two models that is the swap; or the schedule's own random permutation) and iteration
``i + 1`` is played with the new roles. ``PeriodicSwap(period=k)`` swaps
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

import numpy as np

from agents.rl.learner import Learner
from cory_env import OBSERVER, PIONEER, agent_names, seat_prefix

__all__ = [
    "OBSERVER",
    "PIONEER",
    "ROLES",
    "NeverSwap",
    "PeriodicSwap",
    "RandomPermutation",
    "RoleAssignment",
    "SwapSchedule",
    "make_schedule",
]

ROLES: tuple[str, str] = (PIONEER, OBSERVER)
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


class RandomPermutation:
    """Every ``period`` iterations (as :class:`PeriodicSwap`) the seats are dealt anew: a
    uniformly random permutation of the models, drawn from a private generator seeded with
    ``seed`` (its state is checkpointed: resume draws the same permutations)."""

    def __init__(self, period: int = 5, seed: int = 0) -> None:
        self._periodic = PeriodicSwap(period)
        self.period = self._periodic.period
        self.rng = np.random.default_rng(seed)

    def should_swap(self, iteration: int) -> bool:
        return self._periodic.should_swap(iteration)

    def draw(self, k: int) -> list[int]:
        """A random seat order of ``k`` models."""
        return [int(i) for i in self.rng.permutation(k)]

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]


def make_schedule(
    spec: str | int | SwapSchedule | None = "periodic", **kwargs: Any
) -> SwapSchedule:
    """Build a schedule from a name, a period, or pass one through.

    - a :class:`SwapSchedule` instance: returned as is;
    - an ``int`` ``k >= 1`` (or its string, e.g. ``"5"``): ``PeriodicSwap(k)``;
    - ``0``, ``None``, ``"never"``, ``"none"``: ``NeverSwap()``;
    - ``"periodic"`` / ``"rotate"``: ``PeriodicSwap(**kwargs)`` (``period`` defaults to 5);
    - ``"random"``: ``RandomPermutation(**kwargs)`` (``period``, ``seed``).
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
        if name in ("periodic", "rotate"):
            return PeriodicSwap(**kwargs)
        if name == "random":
            return RandomPermutation(**kwargs)
        if name.isdigit():
            return make_schedule(int(name))
        raise ValueError(
            f"unknown swap schedule {spec!r}; use 'periodic', 'random', 'never' or a period"
        )
    if isinstance(spec, SwapSchedule):
        return spec
    raise TypeError(f"cannot make a swap schedule from {spec!r}")


class RoleAssignment:
    """Maps the env's roles (``pioneer_0``, ``observer_0``, ... of a chain of K) to K distinct
    learners.

    Built from ``{role: learner}`` or a sequence ``(a, b, ...)`` (in seat order: ``a`` starts
    as the pioneer). ``learners`` keeps that construction order forever, so learner ``i`` is
    the same model for the whole run (checkpoint learners by that index); :meth:`rotate`
    (:meth:`swap` for two) and :meth:`permute` only change which index plays which role.
    """

    def __init__(self, learners: Mapping[str, Learner] | Sequence[Learner]) -> None:
        if isinstance(learners, Mapping):
            roles = agent_names(len(learners))
            if len(learners) < 2 or set(learners) != set(roles):
                raise ValueError(f"expected exactly the roles {roles}, got {sorted(learners)}")
            chain = tuple(learners[r] for r in roles)
        else:
            chain = tuple(learners)
            if len(chain) < 2:
                raise ValueError(f"expected two or more learners, got {len(chain)}")
        if len({id(x) for x in chain}) != len(chain):
            raise ValueError("every role needs a distinct learner")
        self._learners: tuple[Learner, ...] = chain
        self.roles: tuple[str, ...] = agent_names(len(chain))
        self._order = list(range(len(chain)))  # seat -> index into _learners
        self._num_swaps = 0

    @property
    def learners(self) -> tuple[Learner, ...]:
        """The learners in construction order (independent of the current roles)."""
        return self._learners

    @property
    def pioneer(self) -> Learner:
        return self._learners[self._order[0]]

    @property
    def observer(self) -> Learner:
        """The first observer's learner."""
        return self._learners[self._order[1]]

    @property
    def num_swaps(self) -> int:
        return self._num_swaps

    def __getitem__(self, role: str) -> Learner:
        return self._learners[self.index(role)]

    def index(self, role: str) -> int:
        """Which of :attr:`learners` plays ``role`` now."""
        if role not in self.roles:
            raise KeyError(f"unknown role {role!r}; roles are {self.roles}")
        return self._order[self.roles.index(role)]

    def role_of(self, learner: Learner) -> str:
        """The role ``learner`` (by identity) plays now."""
        for role in self.roles:
            if self[role] is learner:
                return role
        raise KeyError("this learner is not part of the assignment")

    def items(self) -> list[tuple[str, Learner]]:
        """``[(role, learner), ...]`` in env order (pioneer first)."""
        return [(role, self[role]) for role in self.roles]

    def as_dict(self) -> dict[str, Learner]:
        return dict(self.items())

    def rotate(self) -> None:
        """Every model moves one seat along the chain (the last observer becomes the pioneer);
        for two learners, the swap. O(K), references only."""
        self._order = [self._order[-1], *self._order[:-1]]
        self._num_swaps += 1

    swap = rotate

    def permute(self, order: Sequence[int]) -> None:
        """Seat ``j`` is played by learner ``order[j]`` (a permutation of the indices)."""
        if sorted(order) != list(range(len(self._learners))):
            raise ValueError(f"{list(order)} is not a permutation of 0..{len(self._learners) - 1}")
        self._order = [int(i) for i in order]
        self._num_swaps += 1

    def maybe_swap(self, schedule: SwapSchedule, iteration: int) -> bool:
        """Exchange roles if ``schedule.should_swap(iteration)``: the schedule's own order if
        it draws one (``draw(k)``), else a rotation; returns whether it did."""
        if not schedule.should_swap(iteration):
            return False
        draw = getattr(schedule, "draw", None)
        self.permute(draw(len(self._learners))) if draw is not None else self.rotate()
        return True

    def state_dict(self) -> dict[str, int]:
        """Which learner (index into :attr:`learners`) plays each role (by its short name:
        ``pioneer``, ``observer``, ``observer_1`` ...), and the swap count."""
        state = {seat_prefix(role): i for role, i in zip(self.roles, self._order)}
        return {**state, "num_swaps": self._num_swaps}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        n = len(self._learners)
        if n == 2 and "observer" not in state and "pioneer" in state:
            state = {**state, "observer": 1 - int(state["pioneer"])}  # the older, shorter form
        order = [int(state.get(seat_prefix(role), -1)) for role in self.roles]
        if sorted(order) != list(range(n)):
            raise ValueError(f"invalid role state {dict(state)!r}")
        self._order = order
        self._num_swaps = int(state.get("num_swaps", 0))

    def __repr__(self) -> str:
        seats = ", ".join(
            f"{seat_prefix(r)}=learners[{i}]" for r, i in zip(self.roles, self._order)
        )
        return f"RoleAssignment({seats}, num_swaps={self._num_swaps})"
