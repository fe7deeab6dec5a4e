"""The observers' token budget: an observer's prompt holds every earlier answer, so its
mini-batches are longer than the pioneer's; cut into micro-batches of at most the pioneer's
padded tokens per mini-batch (:func:`agents.rl.optimise.optimise`'s gradient accumulation
by a token budget), its update needs no more activation memory than the pioneer's and
takes the same optimiser steps (within float tolerance). The budget reaches the observers'
learners as :meth:`agents.rl.learner.Learner.update`'s ``token_budget``."""

from __future__ import annotations

from agents.run.rollout import Turns

__all__ = ["pioneer_budget"]


def pioneer_budget(turns: Turns, mini_batch_size: int) -> int:
    """The most padded tokens a mini-batch of the pioneer's ``turns`` can hold: its
    ``mini_batch_size`` rows (at most the batch) x its longest prompt + answer."""
    longest = max(len(p) + len(r) for p, r in zip(turns.prompts, turns.responses, strict=True))
    return min(mini_batch_size, len(turns.prompts)) * longest
