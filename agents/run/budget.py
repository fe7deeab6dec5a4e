"""The observers' token budget: an observer's prompt holds every earlier answer, so its
mini-batches are longer than the pioneer's; cut into micro-batches of at most the pioneer's
padded tokens per mini-batch (:func:`agents.rl.optimise.optimise`'s gradient accumulation
by a token budget), its update needs no more activation memory than the pioneer's and
takes the same optimiser steps (within float tolerance)."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any

from agents.run.rollout import Turns

__all__ = ["lowered_budget", "pioneer_budget"]


def pioneer_budget(turns: Turns, mini_batch_size: int) -> int:
    """The most padded tokens a mini-batch of the pioneer's ``turns`` can hold: its
    ``mini_batch_size`` rows (at most the batch) x its longest prompt + answer."""
    longest = max(len(p) + len(r) for p, r in zip(turns.prompts, turns.responses, strict=True))
    return min(mini_batch_size, len(turns.prompts)) * longest


@contextlib.contextmanager
def lowered_budget(learner: Any, budget: int | None) -> Iterator[None]:
    """``learner``'s micro-batch token budget (``config.max_tokens_per_microbatch``) lowered
    to ``budget`` for the block (an own smaller budget, or ``budget`` None, is kept)."""
    cfg = learner.config
    own = cfg.max_tokens_per_microbatch
    if budget is None or (own is not None and own <= budget):
        yield
        return
    learner.config = dataclasses.replace(cfg, max_tokens_per_microbatch=int(budget))
    try:
        yield
    finally:
        learner.config = cfg
