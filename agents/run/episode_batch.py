"""The trainer's batch of episodes (:class:`EpisodeBatch`, distinct from the env's own
:class:`cory_env.state.Episodes`), shared by CORY and the single-agent trainer: one rollout
through the env with its truncation flags, and DAPO's refill rounds (dynamic sampling).

A batch holds ``batch_size`` groups of ``group_size`` consecutive episodes that share a
query. A group is *uniform* for a seat when the ``group_size`` rewards that seat received
are all equal: it carries no gradient for a group baseline, and a learner with
``drop_uniform_groups`` leaves it out. With ``refill_rounds = N`` the trainer rolls out
further batches of fresh queries (same answer length) until ``batch_size`` groups are
informative for at least one such seat, or ``N`` extra rounds have run; the batch then holds
the informative groups in rollout order, filled up with uniform ones (which those learners
drop) when too few were found. The extra rounds count in the iteration's time, hence in the
progress bar's ETA.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from agents.rl.group_maths import uniform_groups
from agents.run.rollout import Turns, rollout_chain
from cory_env import FINISH, seat_prefix
from cory_env.tasks.base import GenerationConfig

__all__ = [
    "EpisodeBatch",
    "dropping_seats",
    "informative_groups",
    "play_chain",
    "refill",
    "truncation",
]


@dataclass
class EpisodeBatch:
    """One rollout's rows: the queries, each seat's :class:`Turns` and its truncation flags."""

    queries: list[Any]
    turns: list[Turns]
    truncated: list[np.ndarray]
    """Per seat, ``(n,)`` bool: the answer ran into the turn's token limit (env finish
    ``length``)."""

    def take(self, rows: np.ndarray) -> EpisodeBatch:
        """The rows ``rows``, in that order."""

        def pick(t: Turns) -> Turns:
            return Turns(
                prompts=[t.prompts[i] for i in rows],
                responses=[t.responses[i] for i in rows],
                texts=[t.texts[i] for i in rows],
                scores=None if t.scores is None else t.scores[rows],
                rewards=None if t.rewards is None else t.rewards[rows],
            )

        return EpisodeBatch(
            [self.queries[i] for i in rows],
            [pick(t) for t in self.turns],
            [f[rows] for f in self.truncated],
        )

    @staticmethod
    def concat(parts: Sequence[EpisodeBatch]) -> EpisodeBatch:
        """The rows of ``parts`` one after the other."""

        def join(ts: Sequence[Turns]) -> Turns:
            cat = lambda xs: None if xs[0] is None else np.concatenate(xs)  # noqa: E731
            return Turns(
                prompts=[p for t in ts for p in t.prompts],
                responses=[r for t in ts for r in t.responses],
                texts=[x for t in ts for x in t.texts],
                scores=cat([t.scores for t in ts]),
                rewards=cat([t.rewards for t in ts]),
            )

        seats = range(len(parts[0].turns))
        return EpisodeBatch(
            [q for p in parts for q in p.queries],
            [join([p.turns[s] for p in parts]) for s in seats],
            [np.concatenate([p.truncated[s] for p in parts]) for s in seats],
        )


def truncation(infos: dict[str, np.ndarray], seat: str) -> np.ndarray:
    """``(n,)`` bool from the vector env's infos: the seat's turn ended at its token limit
    (``<seat>_finish`` is the code of ``"length"``; ``seat``: ``pioneer``, ``observer``, ...)."""
    return np.asarray(infos[f"{seat}_finish"]) == FINISH.index("length")


def play_chain(
    venv,
    agents: Sequence[Any],
    queries: Sequence[Any],
    generations: Sequence[GenerationConfig],
    max_new_tokens: int | Sequence[int],
    generator: torch.Generator | None = None,
) -> EpisodeBatch:
    """One rollout of ``venv``'s chain to its end (:func:`agents.run.rollout.rollout_chain`:
    ``agents[j]`` plays seat ``j``) as a batch: each seat's turns and truncation flags."""
    turns = rollout_chain(venv, agents, queries, generations, max_new_tokens, generator)
    flags = [truncation(venv.infos, seat_prefix(role)) for role in venv.possible_agents]
    return EpisodeBatch(list(queries), turns, flags)


def dropping_seats(learners: Sequence[Any]) -> list[int]:
    """The seats (indices into ``learners``) whose learner drops uniform groups."""
    return [
        i
        for i, lr in enumerate(learners)
        if getattr(getattr(lr, "options", None), "drop_uniform_groups", False)
    ]


def informative_groups(episodes: EpisodeBatch, seats: Sequence[int], group_size: int) -> np.ndarray:
    """``(groups,)`` bool: the groups not uniform for at least one of ``seats``."""
    n_groups = len(episodes.queries) // group_size
    if not seats:
        return np.ones(n_groups, dtype=bool)
    out = np.zeros(n_groups, dtype=bool)
    for s in seats:
        out |= ~uniform_groups(torch.as_tensor(episodes.turns[s].rewards), group_size).numpy()
    return out


def refill(
    episodes: EpisodeBatch,
    roll: Callable[[], EpisodeBatch],
    seats: Sequence[int],
    group_size: int,
    groups: int,
    rounds: int,
) -> tuple[EpisodeBatch, int]:
    """``(batch, extra rounds run)``: ``episodes`` topped up with informative groups from up
    to ``rounds`` calls of ``roll`` (see the module docstring); ``(episodes, 0)`` when it
    already holds ``groups`` informative groups, or no seat drops uniform groups."""
    if rounds <= 0 or not seats:
        return episodes, 0
    parts, flags = [episodes], [informative_groups(episodes, seats, group_size)]
    while sum(int(f.sum()) for f in flags) < groups and len(parts) <= rounds:
        parts.append(roll())
        flags.append(informative_groups(parts[-1], seats, group_size))
    done = len(parts) - 1
    if done == 0:
        return episodes, 0
    informative = np.concatenate(flags)
    chosen = np.concatenate([np.flatnonzero(informative), np.flatnonzero(~informative)])[:groups]
    rows = (np.sort(chosen)[:, None] * group_size + np.arange(group_size)).reshape(-1)
    return EpisodeBatch.concat(parts).take(rows), done
