"""The CORY trainer: two copies of an LLM, a pioneer and an observer, trained with PPO on a
shared reward and exchanging roles every ``T_REx`` iterations (Ma et al., NeurIPS 2024).

Each iteration (:meth:`CoryTrainer.step`):

1. draws a batch of training queries;
2. rolls out the pioneer, then the observer (who reads the pioneer's answer through the
   task's knowledge-transfer template), in lockstep through the vector env;
3. takes the rewards from the env (cooperative: both get ``r(q,a1) + r(q,a2)``);
4. updates each model's learner on its own trajectories (its own prompts, its own
   per-token KL penalty against the frozen reference) and the reward it received;
5. exchanges roles on schedule, in O(1): the learners (weights, optimiser, KL controller,
   score statistics) stay where they are, only the role -> learner mapping flips.

Models are named ``model_a`` (the first pioneer) and ``model_b``; metrics are logged per
seat (``pioneer/...``, ``observer/...``) and per model (``model_a/...``), evaluation of
each model alone under ``eval/model_a/...`` (:mod:`agents.run.metrics`). Evaluation,
state and the loop (cadence, logging, checkpoints, resume, plots) are the shared
:class:`agents.run.trainer.Trainer`'s.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from agents.roles import RoleAssignment, make_schedule
from agents.run.config import TrainConfig
from agents.run.groups import Episodes, bind_run, dropping_seats, refill, truncation, update
from agents.run.metrics import model_key, run_key, seat_key
from agents.run.rollout import rollout_pair
from agents.run.setup import build_agents, build_learner, build_run, load, value_heads
from agents.run.trainer import Trainer
from cory_env import OBSERVER, PIONEER
from cory_env.tasks.base import Task

MODELS = ("model_a", "model_b")


class CoryTrainer(Trainer):
    """CORY over a causal LM: composes the vector env, two learners, the role assignment
    and its schedule. ``model``/``tokenizer``/``task`` may be given to skip loading."""

    models = MODELS

    def __init__(self, config: TrainConfig, *, model=None, tokenizer=None, task: Task | None = None):
        super().__init__(config)
        model, tokenizer = load(config, model, tokenizer)
        names = (config.learner, config.observer_learner or config.learner)
        agents = build_agents(config, model, tokenizer, n=2, value_heads=value_heads(names))
        self.learners = {m: build_learner(n, a, config, i) for i, (m, n, a) in enumerate(zip(MODELS, names, agents))}
        k = max(learner.samples_per_query for learner in self.learners.values())
        for m, learner in self.learners.items():
            if k % learner.samples_per_query:
                raise ValueError(
                    f"{m}'s learner wants groups of {learner.samples_per_query} samples per query, "
                    f"which does not divide the {k} the other learner draws; use matching group sizes"
                )
        self.run = build_run(config, tokenizer, task, samples_per_query=k)
        bind_run(list(self.learners.values()), self.run)
        self.roles = RoleAssignment({PIONEER: self.learners["model_a"], OBSERVER: self.learners["model_b"]})
        self.schedule = make_schedule(config.swap_period if config.role_exchange else "never")

    def model_of(self, role: str) -> str:
        """Which model plays ``role`` now (the assignment keeps the learners in model order)."""
        return MODELS[self.roles.index(role)]

    def step(self, iteration: int) -> dict[str, float]:
        """One CORY iteration; returns its metrics."""
        run, t0 = self.run, time.perf_counter()
        queries, max_new = run.sample_queries()
        pioneer, observer = self.roles[PIONEER], self.roles[OBSERVER]

        def roll(qs: list) -> Episodes:
            pair = rollout_pair(run.venv, pioneer.agent, observer.agent, qs, run.generation,
                                max_new, run.generator)
            flags = [truncation(run.venv.infos, seat) for seat in ("pioneer", "observer")]
            return Episodes(list(qs), list(pair), flags)

        episodes, rounds = refill(roll(queries), lambda: roll(run.draw_queries()),
                                  dropping_seats([pioneer, observer]), run.samples_per_query,
                                  self.config.batch_size, self.config.refill_rounds)
        queries, (first, second) = episodes.queries, episodes.turns
        t_rollout = time.perf_counter() - t0
        metrics: dict[str, float] = {}
        seats = ((PIONEER, pioneer, first, episodes.truncated[0]),
                 (OBSERVER, observer, second, episodes.truncated[1]))
        for role, learner, turns, truncated in seats:
            stats = update(self, learner, turns, truncated)
            if dropping_seats([learner]):
                stats[f"{learner.name}/refill_rounds"] = float(rounds)
            model = self.model_of(role)
            metrics.update({seat_key(role, k): v for k, v in stats.items()})
            metrics.update({
                model_key(model, "score"): float(turns.scores.mean()),
                model_key(model, "kl"): stats.get("objective/kl", float("nan")),
                model_key(model, "role"): 0.0 if role == PIONEER else 1.0,
                seat_key(role, "score"): float(turns.scores.mean()),
                seat_key(role, "length"): float(np.mean([len(r) for r in turns.responses])),
            })
        swapped = self.roles.maybe_swap(self.schedule, iteration)
        metrics.update({
            run_key("reward"): float(first.rewards.mean()),
            run_key("kl"): float(np.mean([metrics[model_key(m, "kl")] for m in MODELS])),
            run_key("max_new_tokens"): float(max_new),
            run_key("swapped"): float(swapped),
            run_key("num_swaps"): float(self.roles.num_swaps),
            run_key("refill_rounds"): float(rounds),
            run_key("episodes"): float(len(queries) * (1 + rounds)),
            run_key("rollout_s"): t_rollout,
            run_key("iteration_s"): time.perf_counter() - t0,
        })
        self.samples = [
            {"query": str(q), "pioneer": a1, "observer": a2, "pioneer_score": float(s1),
             "observer_score": float(s2), "reward": float(r)}
            for q, a1, a2, s1, s2, r in zip(queries, first.texts, second.texts, first.scores,
                                            second.scores, first.rewards)
        ]
        return metrics

    def extra_state(self) -> dict[str, Any]:
        return {"roles": self.roles.state_dict()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.roles.load_state_dict(state["roles"])
