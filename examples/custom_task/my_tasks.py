"""A task of your own for the custom-task example: a factory that returns a ``Task``."""

from cory_env.rewards import make_reward
from cory_env.tasks import GenerationConfig, Query, Task

OPENINGS = ("Dear neighbour,", "Hi team,", "Dear Sam,", "Hello everyone,", "Dear customer,")


def letters(reward: str = "vader", max_new_tokens: int = 12) -> Task:
    """Continue the opening of a letter; ``--task-options max_new_tokens=8`` reaches here."""
    queries = [Query(q) for q in OPENINGS]
    return Task(
        name="letters",
        train_queries=queries[1:],
        eval_queries=queries[:1],
        reward_fn=make_reward(reward),
        observer_template='A first draft: "{q}{a1}". A kinder letter: {q}',
        generation=GenerationConfig(max_new_tokens=max_new_tokens),
    )
