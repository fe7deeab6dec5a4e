"""Task ``prompts``: your own prompts, from a local file or a hub dataset, with your reward.

The rows of a local CSV/JSON/JSONL/Parquet file (read by :func:`read_records`) or of a
Hugging Face hub dataset (``path="user/dataset"``, through ``datasets.load_dataset``) with
a text column of prompts. The task has no reward of its own: pass ``reward=`` (a
registered name, an import path ``module:function`` or ``path/to/file.py:function``, or a
callable), or give one later (``--reward``, the env's ``reward_fn=``); without one, a run
is refused before any model loads, and scoring raises, saying how to give one.

Prompts are shown as they are (``template="{q}"``); the observer reads the pioneer's answer
as a reference before the same prompt (the shape of the paper's two templates: what the
pioneer said, then the pioneer's own prompt), so both answer the same text.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from cory_env.rewards import RewardFn, make_reward
from cory_env.tasks.base import GenerationConfig, MissingReward, Query, Task, register_task
from cory_env.tasks.loading import (
    check_limit,
    is_local_path,
    load_hub,
    pick_column,
    read_records,
    split_items,
)

PROMPT_COLUMNS = ("prompt", "text", "query", "question")
"""The columns tried, in order, when ``column=`` is not given."""

OBSERVER = "Reference answer: {a1}\n\n"
"""What the observer reads before the pioneer's prompt (the default observer template is
this followed by ``template``)."""
CHAIN = "Reference answers:\n{answers}\n\n"
CHAIN_ANSWER = "{i}. {a}"


def load_rows(path: str | Path, split: str, subset: str | None) -> list[dict[str, Any]]:
    """The rows of a local file (one split, ``train``, as ``datasets`` names a lone file's)
    or of a hub dataset's ``split`` (``subset``: its configuration)."""
    if is_local_path(path):
        if split != "train":
            raise ValueError(
                f"{path}: a local file has one split, 'train'; split={split!r} names a split "
                "of a hub dataset (give eval_path= for a separate evaluation file)"
            )
        return read_records(path)
    return load_hub(str(path), subset, split)


def to_queries(
    rows: Sequence[dict[str, Any]], column: str | None, answer_column: str | None, source: str
) -> list[Query]:
    """``Query(prompt, answer=...)`` for each row with a non-blank prompt (rows with a blank
    one are skipped, with a warning); a prompt that is not text is refused, naming its row."""
    col = pick_column(rows, (column,) if column else PROMPT_COLUMNS, source)
    gold = pick_column(rows, (answer_column,), source) if answer_column else None
    out, blank = [], 0
    for i, row in enumerate(rows):
        text = row.get(col)
        if isinstance(text, (list, dict, bytes)):
            raise ValueError(
                f"{source}: row {i}: column {col!r} holds a {type(text).__name__}, not text; "
                "pick a text column with column="
            )
        if text is None or not str(text).strip():
            blank += 1
            continue
        answer = None if gold is None or row.get(gold) is None else str(row[gold])
        out.append(Query(str(text), answer=answer))
    if blank:
        warnings.warn(f"{source}: skipped {blank} row(s) with an empty {col!r}", stacklevel=3)
    if not out:
        raise ValueError(f"{source}: no prompts in column {col!r}")
    return out


def read_queries(
    path: str | Path,
    split: str,
    *,
    subset: str | None,
    limit: int | None,
    column: str | None,
    answer_column: str | None,
) -> list[Query]:
    """The queries of ``path``'s ``split``: its first ``limit`` rows (:func:`load_rows`),
    their prompts (:func:`to_queries`)."""
    return to_queries(load_rows(path, split, subset)[:limit], column, answer_column, str(path))


def prompts_task(
    path: str | Path | None = None,
    column: str | None = None,
    split: str = "train",
    subset: str | None = None,
    eval_path: str | Path | None = None,
    eval_split: str | None = None,
    eval_fraction: float = 0.1,
    answer_column: str | None = None,
    reward: str | RewardFn | None = None,
    reward_kwargs: Mapping[str, Any] | None = None,
    template: str = "{q}",
    observer_template: str | None = None,
    max_new_tokens: int = 16,
    min_new_tokens: int | None = None,
    max_prompt_tokens: int = 128,
    seed: int = 0,
    limit: int | None = None,
) -> Task:
    """The ``prompts`` task (docs/custom-tasks.md lists the same options).

    Args:
        path: a local CSV/JSON/JSONL/Parquet file, or a hub dataset id (``user/dataset``).
        column: the prompt column; None tries ``prompt``, ``text``, ``query``, ``question``.
        split, subset: the hub split to train on (``train[:1000]`` works; a local file has
            one, ``train``) and the hub dataset's configuration.
        eval_path, eval_split: a file or hub dataset, or a hub split, to evaluate on; with
            neither, a seeded ``eval_fraction`` of the prompts is held out.
        answer_column: a column of gold answers (``query.answer``: ``answer-match`` reads it).
        reward, reward_kwargs: a reward name (with its factory's arguments), an import path
            or a callable; None: no reward of its own (give one with ``--reward``).
        template, observer_template: the prompts (``{q}``; ``{q}`` and ``{a1}``); None: the
            pioneer's answer as a reference (:data:`OBSERVER`) before ``template``.
        max_new_tokens, min_new_tokens, max_prompt_tokens: the generation lengths.
        seed, limit: the held-out split's seed; at most this many prompts per source.
    """
    check_limit(limit)
    read = functools.partial(
        read_queries, subset=subset, limit=limit, column=column, answer_column=answer_column
    )
    train, evals = splits(read, path, split, eval_path, eval_split, eval_fraction, seed)
    reward_fn = (
        MissingReward("prompts") if reward is None else make_reward(reward, **(reward_kwargs or {}))
    )
    return Task(
        name="prompts",
        train_queries=train,
        eval_queries=evals,
        reward_fn=reward_fn,
        pioneer_template=template,
        observer_template=observer_template or OBSERVER + template,
        chain_template=CHAIN + template,
        chain_answer=CHAIN_ANSWER,
        generation=GenerationConfig(
            max_new_tokens=max_new_tokens,
            min_new_tokens=min_new_tokens,
            max_prompt_tokens=max_prompt_tokens,
        ),
        description=f"Prompts from {path}; reward: {getattr(reward_fn, '__name__', reward)}",
    )


def splits(
    read: Callable[[str | Path, str], list[Query]],
    path: str | Path | None,
    split: str,
    eval_path: str | Path | None,
    eval_split: str | None,
    eval_fraction: float,
    seed: int,
) -> tuple[list[Query], list[Query]]:
    """(train, eval) queries: ``path``'s ``split`` and a separate evaluation source, or a
    seeded held-out share of the first."""
    if path is None:
        raise ValueError(
            "the prompts task needs path= (--task-path): a local CSV/JSON/JSONL/Parquet "
            "file or a hub dataset id"
        )
    queries = read(path, split)
    if eval_path is None and eval_split is None:
        return split_items(queries, eval_fraction, seed)
    return queries, read(eval_path if eval_path is not None else path, eval_split or split)


register_task("prompts", prompts_task)
