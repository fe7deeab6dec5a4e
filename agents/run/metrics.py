"""The metric names of a run, written down once: logging, plots and ``scripts/compare.py``
all read them from here.

Every row of ``metrics.jsonl`` holds ``iteration`` and keys of these forms:

| key | what |
|---|---|
| ``charts/<name>`` | the run as a whole: ``reward`` (the training batch's mean reward received), ``kl``, ``max_new_tokens``, ``swapped``, ``num_swaps``, ``rollout_s``, ``iteration_s`` |
| ``<model>/score``, ``<model>/kl``, ``<model>/role`` | each trained model (``model_a``, ``model_b``; the PPO baseline's ``policy``): its own task score, its KL, the role it played (0 pioneer, 1 observer) |
| ``<seat>/<learner stat>`` | each seat's learner statistics, e.g. ``pioneer/ppo/loss/total``, ``observer/objective/kl`` (the PPO baseline: ``policy/...``) |
| ``<seat>/score``, ``<seat>/length`` | the seat's task score and answer length |
| ``<seat>/distinct1``, ``<seat>/distinct2``, ``<seat>/repeat_fraction`` | collapse diagnostics of the seat's training answers (the PPO baseline: ``policy/...``); ``<seat>/<learner>/policy/entropy`` is the policy's entropy |
| ``eval/<model>/<stat>`` | each model evaluated alone: ``reward``, ``reward_std``, ``kl``, ``length``, ``distinct1``, ``distinct2`` |

Seats are the env's roles; their metric prefix is :func:`cory_env.seat_prefix` (``pioneer``,
``observer``, ``observer_1``, ...).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from cory_env import seat_prefix

__all__ = ["RUN", "eval_key", "is_model_name", "model_key", "models_in", "run_key", "seat_key"]

RUN = "charts"
"""Prefix of the run-wide metrics."""
EVAL = "eval"
_SEAT = re.compile(r"(pioneer|observer)(_\d+)?")


def seat_key(role: str, name: str) -> str:
    """``pioneer/<name>`` for the env role ``pioneer_0``, ``observer_1/<name>`` for
    ``observer_1`` (and so on)."""
    return f"{seat_prefix(role)}/{name}"


def model_key(model: str, name: str) -> str:
    """``<model>/<name>``, e.g. ``model_a/score``."""
    return f"{model}/{name}"


def eval_key(model: str, name: str) -> str:
    """``eval/<model>/<name>``, e.g. ``eval/model_a/reward``."""
    return f"{EVAL}/{model}/{name}"


def run_key(name: str) -> str:
    """``charts/<name>``."""
    return f"{RUN}/{name}"


def is_model_name(name: str) -> bool:
    """Whether a key's first part names a model (not the run, a seat or the evaluation)."""
    return name not in (RUN, EVAL) and not _SEAT.fullmatch(name)


def models_in(rows: Iterable[dict]) -> list[str]:
    """The model names found in a run's rows, in first-seen order: from
    ``eval/<model>/reward`` and ``<model>/score`` keys."""
    names: list[str] = []
    for row in rows:
        for key in row:
            parts = key.split("/")
            if parts[0] == EVAL and len(parts) == 3 and parts[2] == "reward":
                name = parts[1]
            elif len(parts) == 2 and parts[1] == "score" and is_model_name(parts[0]):
                name = parts[0]
            else:
                continue
            if name not in names:
                names.append(name)
    return names
