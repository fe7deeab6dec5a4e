"""The group learners' shared part: ``group_size`` answers sampled per query.

A group learner (RLOO, the GRPO family) receives batches of ``N = groups * group_size``
rows, rows ``i*group_size .. i*group_size + group_size-1`` answering query ``i``
(``samples_per_query = group_size``); it refuses any other batch, and its state records
the group size it was built with.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import LearnerBase
from .batch import TokenBatch
from .config import LearnerConfig

__all__ = ["GroupLearner", "check_group_size"]


def check_group_size(n: int, group_size: int, learner: str = "RLOO") -> None:
    """Raise ``ValueError`` unless ``group_size >= 2`` is an int and ``n > 0`` is a multiple
    of it (``learner`` names the group learner in the message)."""
    g = group_size
    if isinstance(g, bool) or not isinstance(g, (int, np.integer)):
        raise ValueError(f"group_size (samples per query, --group-size) must be an int, got {g!r}")
    if g < 2:
        raise ValueError(
            f"{learner} needs group_size >= 2 samples per query (--group-size) for a "
            f"group baseline, got group_size={g}"
        )
    if n <= 0 or n % g:
        raise ValueError(
            f"{learner} needs the batch to hold groups of group_size={g} consecutive samples per "
            f"query; got {n} trajectories, not a positive multiple of {g}"
        )


class GroupLearner(LearnerBase):
    """A :class:`agents.rl.base.LearnerBase` whose batches hold groups of ``group_size``."""

    samples_groups = True

    def __init__(
        self, agent: Any, config: LearnerConfig | None = None, group_size: int = 4, **kwargs: Any
    ) -> None:
        """``kwargs``: the skeleton's ``optimizer``, ``lr_scheduler`` and ``world``."""
        check_group_size(group_size, group_size, learner=self.name.upper())
        self.samples_per_query = int(group_size)
        super().__init__(agent, config, **kwargs)

    @property
    def group_size(self) -> int:
        return self.samples_per_query

    def check_batch(self, batch: TokenBatch) -> None:
        check_group_size(len(batch), self.group_size, learner=self.name.upper())

    def state_dict(self) -> dict[str, Any]:
        """``group_size``, then :meth:`agents.rl.base.LearnerBase.state_dict` (not the weights)."""
        return {"group_size": self.group_size, **super().state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = int(state.get("group_size", self.group_size))
        if saved != self.group_size:
            raise ValueError(
                f"state saved with group_size={saved}, this learner has "
                f"group_size={self.group_size}"
            )
        super().load_state_dict(state)
