"""Task ``sentiment``: an offline, CPU-cheap stand-in for ``imdb``.

Queries are 370 movie-review openings of 2-8 words, written for this project (not taken
from IMDB) and shipped as ``data/sentiment_openings.txt``: neutral, negative and positive
ones ("This movie was", "What a waste of", "I was pleasantly surprised"). Same templates
as ``imdb``. The reward defaults to ``vader-gain``: VADER's compound score of ``query +
response`` minus that of the query alone, i.e. the sentiment the answer adds. For each
query that is VADER on ``query + response`` (the ``imdb`` default) shifted by a constant,
so the best answer is the same; the shift takes the opening's own sentiment out of what a
critic must learn, which leaves the answer's own effect to explain.
``reward="vader"`` gives the unshifted score.
Generation is cheaper than the paper's: 4-8 new tokens per turn (``imdb`` takes 4-16),
enough for a sentiment-bearing continuation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from importlib import resources
from typing import Any

from cory_env.rewards import RewardFn
from cory_env.tasks.base import Task, register_task
from cory_env.tasks.imdb import DEFAULT_REWARD_MODEL, review_task
from cory_env.tasks.imdb import GENERATION as IMDB_GENERATION
from cory_env.tasks.loading import check_limit

DATA_FILE = "sentiment_openings.txt"

GENERATION = replace(IMDB_GENERATION, max_new_tokens=8)
"""``imdb``'s sampling with 4-8 new tokens instead of 4-16; 64 prompt tokens hold the
observer's prompt."""


def load_openings() -> list[str]:
    """The embedded review openings, one per line, in file order."""
    text = resources.files("cory_env.tasks").joinpath("data").joinpath(DATA_FILE).read_text("utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def sentiment_task(
    reward: str | RewardFn = "vader-gain",
    reward_model: Any = DEFAULT_REWARD_MODEL,
    reward_kwargs: Mapping[str, Any] | None = None,
    eval_fraction: float = 0.1,
    seed: int = 0,
    limit: int | None = None,
) -> Task:
    """The embedded sentiment task.

    Args:
        reward: ``"vader-gain"`` (default), ``"vader"``, ``"hf-classifier"`` or a callable.
        reward_model: the classifier of ``"hf-classifier"``.
        reward_kwargs: extra keyword arguments of the reward factory.
        eval_fraction: share held out for evaluation (seeded shuffle; 10% = 37 openings).
        seed: seeds the split.
        limit: use only the first ``limit`` openings of the file.
    """
    check_limit(limit)
    return review_task(
        "sentiment",
        load_openings()[:limit],
        eval_fraction,
        seed,
        GENERATION,
        "Continue an embedded movie-review opening; reward: the positive sentiment it adds.",
        reward,
        reward_model,
        reward_kwargs,
    )


register_task("sentiment", sentiment_task)
