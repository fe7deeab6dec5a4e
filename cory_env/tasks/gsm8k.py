"""Task ``gsm8k``: grade-school math word problems (the paper's objective-reward setup).

The pioneer answers a 1-shot ``Question: ... Answer:`` prompt; the observer's prompt adds
the pioneer's answer as ``Reference: ...`` before ``Answer:``. The gold answer is the
number after ``####`` in the dataset's answer, carried as ``Query(question, answer=gold)``;
the reward is ``answer-match``. Data: ``path=`` a local JSONL (or CSV/JSON/Parquet) with
``question``/``answer`` columns, else ``openai/gsm8k`` (config ``main``) from the hub.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cory_env import templates
from cory_env.rewards import extract_answer, make_reward
from cory_env.tasks.base import GenerationConfig, Query, Task, register_task
from cory_env.tasks.loading import check_limit, load_hub, pick_column, read_records, split_items

HUB_DATASET = "openai/gsm8k"
HUB_CONFIG = "main"
PROMPT_BUDGET = 384
"""Prompt tokens besides the reference answer, room for the 1-shot example (~90 tokens)
plus the longest GSM8K question (~320 SmolLM2 tokens for the observer's prompt), with margin."""


def generation_config(max_new_tokens: int = 256) -> GenerationConfig:
    """GSM8K sampling: up to ``max_new_tokens``, stopping at the next ``Question:``; the
    prompt budget holds the observer's prompt with a full-length reference answer."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    return GenerationConfig(
        max_new_tokens=max_new_tokens,
        temperature=1.0,
        top_k=0,
        top_p=1.0,
        stop_strings=templates.GSM8K_STOP,
        max_prompt_tokens=PROMPT_BUDGET + max_new_tokens,
    )


def gold_answer(solution: str) -> str:
    """The gold number of a GSM8K solution (after ``####``), without commas."""
    gold = extract_answer(str(solution))
    if gold is None:
        raise ValueError(f"no numeric answer in solution {str(solution)[-80:]!r}")
    return gold


def to_queries(records: Sequence[dict[str, Any]], source: object) -> list[Query]:
    """``Query(question, answer=gold)`` for each ``question``/``answer`` record."""
    q_col = pick_column(records, ("question",), source)
    a_col = pick_column(records, ("answer",), source)
    out = []
    for i, row in enumerate(records):
        try:
            out.append(Query(str(row[q_col]).strip(), answer=gold_answer(row[a_col])))
        except ValueError as exc:
            raise ValueError(f"{source}: row {i}: {exc}") from exc
    return out


def gsm8k_task(
    path: str | Path | None = None,
    eval_path: str | Path | None = None,
    eval_fraction: float = 0.1,
    seed: int = 0,
    limit: int | None = None,
    max_new_tokens: int = 256,
) -> Task:
    """The GSM8K task.

    Args:
        path: local JSONL/CSV/JSON/Parquet file with ``question`` and ``answer`` columns;
            ``None`` loads ``openai/gsm8k`` (``main``): train split for training, test split
            for evaluation.
        eval_path: a separate local evaluation file; without it a local ``path`` is split.
        eval_fraction: share of ``path`` held out (seeded shuffle) when ``eval_path`` is None.
        seed: seeds that split.
        limit: read at most this many rows from each source.
        max_new_tokens: answer length budget (the paper lets the model answer in full).
    """
    check_limit(limit)
    if path is None:
        train = to_queries(load_hub(HUB_DATASET, HUB_CONFIG, "train")[:limit], HUB_DATASET)
        evals = to_queries(load_hub(HUB_DATASET, HUB_CONFIG, "test")[:limit], HUB_DATASET)
    elif eval_path is None:
        train, evals = split_items(
            to_queries(read_records(path)[:limit], path), eval_fraction, seed
        )
    else:
        train = to_queries(read_records(path)[:limit], path)
        evals = to_queries(read_records(eval_path)[:limit], eval_path)
    return Task(
        name="gsm8k",
        train_queries=train,
        eval_queries=evals,
        reward_fn=make_reward("answer-match"),
        pioneer_template=templates.GSM8K_PIONEER,
        observer_template=templates.GSM8K_OBSERVER,
        chain_template=templates.GSM8K_CHAIN,
        chain_answer=templates.GSM8K_CHAIN_ANSWER,
        generation=generation_config(max_new_tokens),
        description="1-shot GSM8K math word problems; reward: final number matches the gold.",
    )


register_task("gsm8k", gsm8k_task)
