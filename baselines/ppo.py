"""Single-agent PPO through the same env and PPO core: the paper's baseline.

One model plays the pioneer role alone (no observer, no knowledge transfer, no role
exchange) and learns from its own task reward ``r(q, a1)``, with the same per-token KL
penalty, learner, evaluation, logging and checkpoints as :class:`agents.cory.CoryTrainer`.
The model is named ``policy`` in the metrics (``policy/score``, ``eval/policy/reward``).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from agents.batch import TokenBatch
from agents.config import TrainConfig
from agents.evaluate import evaluate_alone
from agents.loop import fit
from agents.rollout import rollout_alone
from agents.setup import build_agents, build_learner, build_run, load
from cory_env.rewards import score
from cory_env.tasks.base import Task


class PPOTrainer:
    """PPO on the pioneer role of the CORY env (the observer never plays)."""

    models = ("policy",)

    def __init__(self, config: TrainConfig, *, model=None, tokenizer=None, task: Task | None = None):
        self.config = config
        model, tokenizer = load(config, model, tokenizer)
        (agent,) = build_agents(config, model, tokenizer, n=1)
        self.learner = build_learner(config.learner, agent, config)
        self.run = build_run(config, tokenizer, task, samples_per_query=self.learner.samples_per_query)
        self.samples: list[dict[str, Any]] = []

    def step(self, iteration: int) -> dict[str, float]:
        """One PPO iteration; returns its metrics."""
        run, t0 = self.run, time.perf_counter()
        queries, max_new = run.sample_queries()
        turns = rollout_alone(run.venv, self.learner.agent, queries, run.generation, max_new, run.generator)
        turns.scores = score(run.task.reward_fn, [run.task.lookup(q) for q in queries], turns.texts)
        t_rollout = time.perf_counter() - t0
        batch = TokenBatch.from_lists(turns.prompts, turns.responses, run.pad_id,
                                      device=self.learner.agent.device)
        stats = self.learner.update(batch, turns.scores)
        self.samples = [{"query": str(q), "pioneer": a, "pioneer_score": float(s)}
                        for q, a, s in zip(queries, turns.texts, turns.scores)]
        return {
            **{f"policy/{k}": v for k, v in stats.items()},
            "policy/score": float(turns.scores.mean()),
            "policy/kl": stats.get("objective/kl", float("nan")),
            "policy/length": float(np.mean([len(r) for r in turns.responses])),
            "charts/reward": float(turns.scores.mean()),
            "charts/kl": stats.get("objective/kl", float("nan")),
            "charts/max_new_tokens": float(max_new),
            "charts/rollout_s": t_rollout,
            "charts/iteration_s": time.perf_counter() - t0,
        }

    def evaluate(self) -> dict[str, float]:
        """The policy alone on the held-out queries (as CORY's models are evaluated)."""
        run = self.run
        stats, _ = evaluate_alone(
            self.learner.agent, run.eval_venv, run.task, run.eval_queries, run.generation,
            run.generation.max_new_tokens, seed=self.config.seed + 7919, pad_id=run.pad_id,
        )
        return {f"eval/policy/{k}": v for k, v in stats.items()}

    def state_dict(self) -> dict[str, Any]:
        return {"agent": self.learner.agent.state_dict(), "learner": self.learner.state_dict(),
                "random": self.run.random_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.learner.agent.load_state_dict(state["agent"])
        self.learner.load_state_dict(state["learner"])
        self.run.load_random_state(state["random"])

    def train(self, stop_after: int | None = None) -> list[dict[str, Any]]:
        """Run the configured iterations (resuming if asked); returns the metric rows."""
        return fit(self, self.config, stop_after=stop_after)
