"""A deterministic test task over the tiny tokenizer, and a helper to play an episode."""

from __future__ import annotations

import numpy as np

from cory_env import OBSERVER, PIONEER, GenerationConfig, Query, Task

FILM, THE, BANG, EOS = 292, 317, 1, 0  # tiny tokenizer: " film", " the", "!", <eos>
QUERIES = [Query("This movie was", "8"), Query("I loved this film"), Query("The plot was")]


def film_reward(queries, responses):
    """Deterministic: 1 per "film", 0.25 per "!" in the answer."""
    return np.array([r.count("film") + 0.25 * r.count("!") for r in responses], np.float32)


def make_test_task(reward_fn=film_reward, **generation) -> Task:
    gen = {"max_new_tokens": 6, "max_prompt_tokens": 24, **generation}
    return Task(
        name="test",
        train_queries=QUERIES,
        eval_queries=QUERIES[:1],
        reward_fn=reward_fn,
        pioneer_template="{q}",
        observer_template='Better: "{q}{a1}" {q}',
        generation=GenerationConfig(**gen),
    )


def play(env, pioneer: list[int], observer: list[int]) -> None:
    """Step the given tokens for each role (the turn must end with the last one)."""
    for role, tokens in ((PIONEER, pioneer), (OBSERVER, observer)):
        for t in tokens:
            assert env.agent_selection == role
            env.step(t)
