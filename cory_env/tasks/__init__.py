"""Tasks looked up by name: ``imdb``, ``gsm8k``, the offline embedded ``sentiment``, ``arith``,
and ``prompts`` (your own prompts from a file or a hub dataset); or by the import path of a
factory, ``module:factory``."""

# Each task module registers itself on import.
from cory_env.tasks import arith, gsm8k, imdb, prompts, sentiment  # noqa: E402,F401
from cory_env.tasks.base import (
    GenerationConfig,
    Query,
    RewardFn,
    Task,
    available_tasks,
    make_task,
    register_task,
)

__all__ = [
    "GenerationConfig",
    "Query",
    "RewardFn",
    "Task",
    "available_tasks",
    "make_task",
    "register_task",
]
