"""CORY's training side: the RL maths and learners (:mod:`agents.rl`), the model side
(:mod:`agents.policy`), the run plumbing (:mod:`agents.run`), role exchange
(:mod:`agents.roles`) and the CORY trainer (:mod:`agents.cory`).

The public API is importable from here: ``from agents import CoryTrainer, TrainConfig,
LLMAgent, Learner, make_learner, register_learner``. Names load on first use, so
``import agents.rl.maths`` does not pull in the model stack.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CoryTrainer": "agents.cory",
    "TrainConfig": "agents.run.config",
    "LLMAgent": "agents.policy.agent",
    "Learner": "agents.rl.learner",
    "make_learner": "agents.rl.learner",
    "register_learner": "agents.rl.learner",
    "available_learners": "agents.rl.learner",
    "LearnerConfig": "agents.rl.config",
    "PPOLearner": "agents.rl.ppo",
    "RLOOLearner": "agents.rl.rloo",
    "GRPOLearner": "agents.rl.grpo",
    "TokenBatch": "agents.rl.batch",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'agents' has no attribute {name!r}")
