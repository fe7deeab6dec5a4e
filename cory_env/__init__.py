"""CORY: a PettingZoo environment for sequential cooperative LLM fine-tuning.

``cory_env.env(...)`` is the wrapped AEC env (also ``pettingzoo.make("aec",
"cory/CoryText-v0", ...)`` once this package is imported),
:class:`~cory_env.env.CoryTextEnv` the raw one, :class:`~cory_env.vector.CoryTextVecEnv`
B episodes in lockstep, and :mod:`cory_env.wrappers` the single-agent Gymnasium views.
"""

import pettingzoo

from cory_env.env import CoryTextEnv, env
from cory_env.rewards import RewardError
from cory_env.state import AGENTS, FINISH, OBSERVER, PIONEER, agent_names, seat_prefix
from cory_env.tasks import GenerationConfig, Query, Task, available_tasks, make_task
from cory_env.vector import CoryTextVecEnv
from cory_env.wrappers import FixedTextPolicy, ObserverEnv, PioneerEnv, RandomPolicy

raw_env = CoryTextEnv

if "cory/CoryText-v0" not in pettingzoo.aec_registry:
    pettingzoo.register("aec", "cory/CoryText-v0", entry_point="cory_env.env:env")

__all__ = [
    "AGENTS",
    "FINISH",
    "OBSERVER",
    "PIONEER",
    "CoryTextEnv",
    "CoryTextVecEnv",
    "FixedTextPolicy",
    "GenerationConfig",
    "ObserverEnv",
    "PioneerEnv",
    "Query",
    "RandomPolicy",
    "RewardError",
    "Task",
    "agent_names",
    "available_tasks",
    "env",
    "make_task",
    "raw_env",
    "seat_prefix",
]
