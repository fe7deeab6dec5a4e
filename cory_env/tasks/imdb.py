"""Task ``imdb``: continue the opening of a movie review (the paper's subjective-reward setup).

Queries follow TRL's sentiment recipe: reviews longer than 200 characters (after ``<br />``
tags are replaced by spaces), each cut to its first ``n`` tokens with ``n`` drawn per
review from 2..8 by a seeded RNG. "Tokens" are those of ``tokenizer`` when one is passed
(as in TRL, where it is the policy's tokenizer), else whitespace-separated words.

The paper's reward is the raw POSITIVE logit of ``lvwerra/distilbert-imdb``
(``reward="hf-classifier"``), which needs the hub or a local copy of that model; the
default ``reward="vader"`` works offline. Data: ``path=`` a local CSV/JSON/JSONL/Parquet
file with a ``text`` or ``review`` column, else ``stanfordnlp/imdb`` (train split) from
the hub.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from cory_env import templates
from cory_env.rewards import RewardFn, make_reward
from cory_env.tasks.base import GenerationConfig, Query, Task, register_task
from cory_env.tasks.loading import check_limit, load_hub, pick_column, read_records, split_items

HUB_DATASET = "stanfordnlp/imdb"
DEFAULT_REWARD_MODEL = "lvwerra/distilbert-imdb"
MIN_REVIEW_CHARS = 200
PROMPT_TOKENS = (2, 8)

GENERATION = GenerationConfig(max_new_tokens=16, min_new_tokens=4, max_prompt_tokens=64)
"""The paper's sampling, 4-16 new tokens from the full distribution (the temperature, top-k
and top-p defaults of :class:`~cory_env.tasks.base.GenerationConfig`). 64 prompt tokens
hold the observer's prompt (~10 template tokens + 2 x 8 query tokens + a 16-token answer)."""

WORD_PROMPT_TOKENS = 96
"""The ``max_prompt_tokens`` of queries cut into words (8 words can be many more tokens)."""

_BR = re.compile(r"<br\s*/?>", re.IGNORECASE)


def clean_review(text: str) -> str:
    """A review with ``<br />`` tags removed and whitespace collapsed."""
    return " ".join(_BR.sub(" ", text).split())


def review_openings(
    reviews: Iterable[str],
    seed: int = 0,
    tokenizer: Any = None,
    lengths: tuple[int, int] = PROMPT_TOKENS,
) -> list[str]:
    """The first ``n`` tokens (``n`` uniform in ``lengths``, one draw per kept review) of each
    review longer than ``MIN_REVIEW_CHARS`` characters, in order."""
    lo, hi = lengths
    if not 1 <= lo <= hi:
        raise ValueError(f"lengths must satisfy 1 <= min <= max, got {lengths}")
    rng = np.random.default_rng(seed)
    out = []
    for raw in reviews:
        if not isinstance(raw, str):
            continue
        text = clean_review(raw)
        if len(text) <= MIN_REVIEW_CHARS:
            continue
        n = int(rng.integers(lo, hi + 1))
        words = text.split()
        if tokenizer is None:
            query = " ".join(words[:n])
        else:
            # A token never spans whitespace, so 2n words hold the first n tokens.
            ids = tokenizer.encode(" ".join(words[: 2 * n]), add_special_tokens=False)[:n]
            query = tokenizer.decode(ids, skip_special_tokens=True)
        if query.strip():
            out.append(query)
    return out


def load_reviews(path: str | Path | None = None) -> list[str]:
    """Review texts from a local file (``text`` or ``review`` column) or the hub."""
    if path is None:
        records = load_hub(HUB_DATASET, split="train")
        source: object = HUB_DATASET
    else:
        records = read_records(path)
        source = path
    column = pick_column(records, ("text", "review"), source)
    return [r[column] for r in records]


def sentiment_reward(
    reward: str | RewardFn, reward_model: Any, reward_kwargs: Mapping[str, Any] | None
) -> RewardFn:
    """The reward of the sentiment-style tasks: a reward name or a callable; for
    ``"hf-classifier"`` the classifier is ``reward_model``."""
    kwargs = dict(reward_kwargs or {})
    if reward == "hf-classifier":
        kwargs.setdefault("model", reward_model)
    return make_reward(reward, **kwargs)


def review_task(
    name: str,
    openings: Sequence[str],
    eval_fraction: float,
    seed: int,
    generation: GenerationConfig,
    description: str,
    reward: str | RewardFn,
    reward_model: Any,
    reward_kwargs: Mapping[str, Any] | None,
) -> Task:
    """A sentiment-style task on review ``openings``: a seeded train/eval split, the IMDB
    templates and :func:`sentiment_reward` (shared by ``imdb`` and ``sentiment``)."""
    train, evals = split_items([Query(q) for q in openings], eval_fraction, seed)
    return Task(
        name=name,
        train_queries=train,
        eval_queries=evals,
        reward_fn=sentiment_reward(reward, reward_model, reward_kwargs),
        pioneer_template=templates.IMDB_PIONEER,
        observer_template=templates.IMDB_OBSERVER,
        chain_template=templates.IMDB_CHAIN,
        chain_answer=templates.IMDB_CHAIN_ANSWER,
        chain_separator=templates.IMDB_CHAIN_SEPARATOR,
        generation=generation,
        description=description,
    )


def imdb_task(
    path: str | Path | None = None,
    reward: str | RewardFn = "vader",
    reward_model: Any = DEFAULT_REWARD_MODEL,
    reward_kwargs: Mapping[str, Any] | None = None,
    tokenizer: Any = None,
    eval_fraction: float = 0.1,
    seed: int = 0,
    limit: int | None = None,
) -> Task:
    """The IMDB task.

    Args:
        path: local CSV/JSON/JSONL/Parquet file (``text`` or ``review`` column); ``None``
            loads ``stanfordnlp/imdb`` (train split) through ``datasets``.
        reward: ``"vader"`` (default, offline), ``"hf-classifier"`` (the paper's), or a
            callable ``(queries, responses) -> array``.
        reward_model: the classifier of ``"hf-classifier"`` (hub id, folder or model).
        reward_kwargs: extra keyword arguments of the reward factory (``label``,
            ``batch_size``, ``device``, ``tokenizer``...).
        tokenizer: cut prompts into this tokenizer's tokens (an object or a hub id);
            ``None`` cuts into whitespace words.
        eval_fraction: share of the queries held out (seeded shuffle) for evaluation.
        seed: seeds the prompt lengths and the split.
        limit: keep at most this many reviews (after the length filter).
    """
    check_limit(limit)
    if isinstance(tokenizer, (str, Path)):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer))
    openings = review_openings(load_reviews(path), seed=seed, tokenizer=tokenizer)
    if not openings:
        raise ValueError(f"no review longer than {MIN_REVIEW_CHARS} characters in {path}")
    generation = GENERATION
    if tokenizer is None:
        generation = replace(GENERATION, max_prompt_tokens=WORD_PROMPT_TOKENS)
    return review_task(
        "imdb",
        openings[:limit],
        eval_fraction,
        seed,
        generation,
        "Continue an IMDB review opening; reward: positive sentiment.",
        reward,
        reward_model,
        reward_kwargs,
    )


register_task("imdb", imdb_task)
