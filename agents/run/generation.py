"""A run's sampling settings: the task's generation defaults with the config's length
overrides, and each seat's with the ``--seat-*`` overrides."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TypeVar

from agents.run.config import TrainConfig
from cory_env.tasks import GenerationConfig, Task

__all__ = ["generation_of", "seat_generations"]

_V = TypeVar("_V")


def generation_of(config: TrainConfig, task: Task) -> GenerationConfig:
    """The task's generation defaults with the config's length overrides."""
    gen = task.generation
    max_new = config.max_new_tokens or gen.max_new_tokens
    min_new = config.min_new_tokens if config.min_new_tokens is not None else gen.min_new_tokens
    if min_new is not None and min_new > max_new:
        min_new = max_new
    return replace(gen, max_new_tokens=max_new, min_new_tokens=min_new)


def seat_generations(config: TrainConfig, generation: GenerationConfig) -> list[GenerationConfig]:
    """Each seat's sampling settings: the run's, with the ``--seat-*`` overrides."""

    def seat(values: Sequence[_V] | None, j: int, default: _V) -> _V:
        return default if values is None else values[j]

    g = generation
    return [
        replace(
            g,
            temperature=seat(config.seat_temperature, j, g.temperature),
            top_k=seat(config.seat_top_k, j, g.top_k),
            top_p=seat(config.seat_top_p, j, g.top_p),
            max_new_tokens=seat(config.seat_max_new_tokens, j, g.max_new_tokens),
        )
        for j in range(config.num_agents)
    ]
