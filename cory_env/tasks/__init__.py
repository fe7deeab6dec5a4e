"""Tasks looked up by name: ``imdb``, ``gsm8k`` and the offline embedded ``sentiment``, ``arith``."""

# Each task module registers itself on import.
from cory_env.tasks import arith, gsm8k, imdb, sentiment  # noqa: E402,F401
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
