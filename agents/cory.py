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
role (``pioneer/...``, ``observer/...``) and per model (``model_a/...``), evaluation of
each model alone under ``eval/model_a/...``. The loop itself (evaluation cadence,
logging, checkpoints, resume, plots) is :func:`agents.loop.fit`.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from agents.batch import TokenBatch
from agents.config import TrainConfig
from agents.evaluate import evaluate_alone
from agents.loop import fit
from agents.roles import RoleAssignment, make_schedule
from agents.rollout import OBSERVER, PIONEER, Turns, rollout_pair
from agents.setup import build_agents, build_learner, build_run, load
from cory_env.tasks.base import Task

MODELS = ("model_a", "model_b")


class CoryTrainer:
    """CORY over a causal LM: composes the vector env, two learners, the role assignment
    and its schedule. ``model``/``tokenizer``/``task`` may be given to skip loading."""

    models = MODELS

    def __init__(self, config: TrainConfig, *, model=None, tokenizer=None, task: Task | None = None):
        self.config = config
        model, tokenizer = load(config, model, tokenizer)
        agents = build_agents(config, model, tokenizer, n=2)
        names = (config.learner, config.observer_learner or config.learner)
        self.learners = {m: build_learner(n, a, config, i) for i, (m, n, a) in enumerate(zip(MODELS, names, agents))}
        k = max(learner.samples_per_query for learner in self.learners.values())
        for m, learner in self.learners.items():
            if k % learner.samples_per_query:
                raise ValueError(
                    f"{m}'s learner wants groups of {learner.samples_per_query} samples per query, "
                    f"which does not divide the {k} the other learner draws; use matching group sizes"
                )
        self.run = build_run(config, tokenizer, task, samples_per_query=k)
        self.roles = RoleAssignment({PIONEER: self.learners["model_a"], OBSERVER: self.learners["model_b"]})
        self.schedule = make_schedule(config.swap_period if config.role_exchange else "never")
        self.samples: list[dict[str, Any]] = []

    def model_of(self, role: str) -> str:
        """Which model plays ``role`` now."""
        learner = self.roles[role]
        return next(m for m, lr in self.learners.items() if lr is learner)

    def step(self, iteration: int) -> dict[str, float]:
        """One CORY iteration; returns its metrics."""
        run, t0 = self.run, time.perf_counter()
        queries, max_new = run.sample_queries()
        pioneer, observer = self.roles[PIONEER], self.roles[OBSERVER]
        first, second = rollout_pair(
            run.venv, pioneer.agent, observer.agent, queries, run.generation, max_new,
            self.config.reward_mode, run.generator,
        )
        t_rollout = time.perf_counter() - t0
        metrics: dict[str, float] = {}
        for role, learner, turns in ((PIONEER, pioneer, first), (OBSERVER, observer, second)):
            stats = self._update(learner, turns)
            model = self.model_of(role)
            metrics.update({f"{role[:-2]}/{k}": v for k, v in stats.items()})
            metrics.update({
                f"{model}/score": float(turns.scores.mean()),
                f"{model}/kl": stats.get("objective/kl", float("nan")),
                f"{model}/role": 0.0 if role == PIONEER else 1.0,
                f"{role[:-2]}/score": float(turns.scores.mean()),
                f"{role[:-2]}/length": float(np.mean([len(r) for r in turns.responses])),
            })
        swapped = self.schedule.should_swap(iteration)
        if swapped:
            self.roles.swap()
        metrics.update({
            "charts/reward": float(first.rewards.mean()),
            "charts/kl": float(np.mean([metrics[f"{m}/kl"] for m in MODELS])),
            "charts/max_new_tokens": float(max_new),
            "charts/swapped": float(swapped),
            "charts/num_swaps": float(self.roles.num_swaps),
            "charts/rollout_s": t_rollout,
            "charts/iteration_s": time.perf_counter() - t0,
        })
        self.samples = [
            {"query": str(q), "pioneer": a1, "observer": a2, "pioneer_score": float(s1),
             "observer_score": float(s2), "reward": float(r)}
            for q, a1, a2, s1, s2, r in zip(queries, first.texts, second.texts, first.scores,
                                            second.scores, first.rewards)
        ]
        return metrics

    def _update(self, learner, turns: Turns) -> dict[str, float]:
        batch = TokenBatch.from_lists(turns.prompts, turns.responses, self.run.pad_id,
                                      device=learner.agent.device)
        return learner.update(batch, turns.rewards)

    def evaluate(self) -> dict[str, float]:
        """Each model alone, from the query-only prompt, on the held-out queries; every model
        (and the PPO baseline's policy) samples with the same random numbers."""
        run, out = self.run, {}
        for model, learner in self.learners.items():
            stats, _ = evaluate_alone(
                learner.agent, run.eval_venv, run.task, run.eval_queries, run.generation,
                run.generation.max_new_tokens, seed=self.config.seed + 7919, pad_id=run.pad_id,
            )
            out.update({f"eval/{model}/{k}": v for k, v in stats.items()})
        return out

    def state_dict(self) -> dict[str, Any]:
        return {
            "learners": {m: {"agent": lr.agent.state_dict(), "learner": lr.state_dict()}
                         for m, lr in self.learners.items()},
            "roles": self.roles.state_dict(),
            "random": self.run.random_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for m, lr in self.learners.items():
            lr.agent.load_state_dict(state["learners"][m]["agent"])
            lr.load_state_dict(state["learners"][m]["learner"])
        self.roles.load_state_dict(state["roles"])
        self.run.load_random_state(state["random"])

    def train(self, stop_after: int | None = None) -> list[dict[str, Any]]:
        """Run the configured iterations (resuming if asked); returns the metric rows."""
        return fit(self, self.config, stop_after=stop_after)
