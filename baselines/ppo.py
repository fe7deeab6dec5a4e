"""Single-agent PPO through the same env and PPO core: the paper's baseline.

One model plays the pioneer role alone (no observer, no knowledge transfer, no role
exchange) and learns from its own task reward ``r(q, a1)``, with the same per-token KL
penalty, learner, evaluation, logging and checkpoints as :class:`agents.cory.CoryTrainer`
(both are :class:`agents.run.trainer.Trainer`). The model is named ``policy`` in the
metrics (``policy/score``, ``eval/policy/reward``).
"""

from __future__ import annotations

import time

import numpy as np

from agents.run.config import TrainConfig
from agents.run.episode_batch import (
    EpisodeBatch,
    bind_run,
    dropping_seats,
    refill,
    truncation,
    update,
)
from agents.run.evaluate import collapse_stats
from agents.run.metrics import model_key, run_key
from agents.run.rollout import rollout_alone
from agents.run.setup import build_agents, build_learner, build_run, load, value_heads
from agents.run.trainer import Trainer
from cory_env.tasks.base import Task

POLICY = "policy"


class SingleAgentTrainer(Trainer):
    """PPO on the pioneer role of the CORY env (the observer never plays)."""

    models = (POLICY,)

    def __init__(self, config: TrainConfig, *, model=None, tokenizer=None, task: Task | None = None):
        super().__init__(config)
        model, tokenizer = load(config, model, tokenizer)
        (agent,) = build_agents(config, model, tokenizer, n=1, value_heads=value_heads([config.learner]),
                                world=self.world)
        self.learners = {POLICY: build_learner(config.learner, agent, config)}
        self.run = build_run(config, tokenizer, task, samples_per_query=self.learner.samples_per_query,
                             world=self.world)
        bind_run([self.learner], self.run)

    @property
    def learner(self):
        """The one learner."""
        return self.learners[POLICY]

    def step(self, iteration: int) -> dict[str, float]:
        """One PPO iteration; returns its metrics."""
        run, t0 = self.run, time.perf_counter()
        queries, max_new = run.sample_queries()

        @self.sharded
        def roll(qs: list) -> EpisodeBatch:
            turns = rollout_alone(run.venv, self.learner.agent, qs, run.generation, max_new,
                                  run.generator, task=run.task)
            return EpisodeBatch(list(qs), [turns], [truncation(run.venv.infos, "pioneer")])

        episodes, rounds = refill(roll(queries), lambda: roll(run.draw_queries()),
                                  dropping_seats([self.learner]), run.samples_per_query,
                                  self.config.batch_size, self.config.refill_rounds)
        queries, (turns,) = episodes.queries, episodes.turns
        t_rollout = time.perf_counter() - t0
        stats = update(self, self.learner, turns, episodes.truncated[0])
        if dropping_seats([self.learner]):
            stats[f"{self.learner.name}/refill_rounds"] = float(rounds)
        self.samples = [{"query": str(q), "pioneer": a, "pioneer_score": float(s)}
                        for q, a, s in zip(queries, turns.texts, turns.scores)]
        kl = stats.get("objective/kl", float("nan"))
        return {
            **{model_key(POLICY, k): v for k, v in stats.items()},
            model_key(POLICY, "score"): float(turns.scores.mean()),
            model_key(POLICY, "kl"): kl,
            model_key(POLICY, "length"): float(np.mean([len(r) for r in turns.responses])),
            **{model_key(POLICY, k): v for k, v in collapse_stats(turns.texts).items()},
            run_key("reward"): float(turns.scores.mean()),
            run_key("kl"): kl,
            run_key("max_new_tokens"): float(max_new),
            run_key("refill_rounds"): float(rounds),
            run_key("episodes"): float(len(queries) * (1 + rounds)),
            run_key("rollout_s"): t_rollout,
            run_key("iteration_s"): time.perf_counter() - t0,
        }
