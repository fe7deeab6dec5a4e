"""The single-agent trainer through the same env and learners: the paper's PPO baseline.

One model plays the env's one-agent chain (``num_agents=1``: the pioneer alone, no observer,
no knowledge transfer, no role exchange), each episode to its end, and learns from the
reward the env gives it, its own task reward ``r(q, a1)``, with the same per-token KL
penalty, learners, evaluation, logging and checkpoints as :class:`agents.cory.CoryTrainer`
(both are :class:`agents.run.trainer.Trainer`). The model is named ``policy`` in the
metrics (``policy/score``, ``eval/policy/reward``).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from agents.run.config import TrainConfig
from agents.run.envs import build_run
from agents.run.evaluate import collapse_stats
from agents.run.generation import generation_of
from agents.run.metrics import model_key
from agents.run.setup import build_agents, build_task, load, value_heads
from agents.run.trainer import Trainer
from cory_env.tasks.base import Task

POLICY = "policy"


class SingleAgentTrainer(Trainer):
    """One model trained alone (``--learner``, PPO by default) on the env's one-agent chain."""

    models = (POLICY,)

    def __init__(
        self, config: TrainConfig, *, model=None, tokenizer=None, task: Task | None = None
    ):
        super().__init__(config)
        model, tokenizer = load(config, model, tokenizer, world=self.world)
        (agent,) = build_agents(
            config,
            model,
            tokenizer,
            n=1,
            value_heads=value_heads([config.learner]),
            world=self.world,
        )
        task = build_task(config, task)
        self.learners = self.build_learners(
            [config.learner], [agent], generation_of(config, task).max_new_tokens
        )
        self.run = build_run(
            config,
            tokenizer,
            task,
            num_agents=1,
            world=self.world,
            samples_per_query=self.learner.samples_per_query,
        )

    @property
    def method(self) -> str:
        return f"single-agent {self.config.learner.upper()}"

    @property
    def learner(self):
        """The one learner."""
        return self.learners[POLICY]

    def step(self, iteration: int) -> dict[str, float]:
        """One iteration: a batch of one-agent episodes, one update; returns its metrics."""
        run, t0 = self.run, time.perf_counter()
        queries, max_new = run.sample_queries()
        episodes, rounds = self.roll_out([self.learner], [run.generation], max_new, queries)
        t_rollout = time.perf_counter() - t0
        stats = self.learn(self.learner, episodes, 0, rounds)
        (turns,) = episodes.turns
        self.samples = [
            {"query": str(q), "pioneer": a, "pioneer_score": float(s)}
            for q, a, s in zip(episodes.queries, turns.texts, turns.scores)
        ]
        kl = stats.get("objective/kl", float("nan"))
        policy: dict[str, Any] = {
            **stats,
            "score": float(turns.scores.mean()),
            "kl": kl,
            "length": float(np.mean([len(r) for r in turns.responses])),
            **collapse_stats(turns.texts),
        }
        return {
            **{model_key(POLICY, k): v for k, v in policy.items()},
            **self.run_metrics(episodes, kl, max_new, rounds, t0, t_rollout),
        }
