"""The CORY trainer: copies of an LLM (or several LLMs) in a chain of roles — the pioneer,
then observers who read every earlier answer — trained with PPO (or any learner) on a
shared reward, exchanging roles every ``T_REx`` iterations (Ma et al., NeurIPS 2024; the
paper's game is the chain of two).

Each iteration (:meth:`CoryTrainer.step`):

1. draws a batch of training queries;
2. rolls out the pioneer, then each observer (who reads the earlier answers through the
   task's knowledge-transfer template), in lockstep through the vector env, each seat with
   its own sampling settings;
3. takes the rewards from the env (cooperative: every seat gets the sum of all answers'
   rewards, ``r(q,a1) + r(q,a2)`` for two);
4. updates each model's learner on its own trajectories (its own prompts, its own
   per-token KL penalty against its frozen reference) and the reward it received (with
   ``observer_token_budget``, an observer's mini-batches cut to the pioneer's tokens);
5. exchanges roles on schedule, in O(K): every model moves one seat along the chain (two:
   the swap) or the seats are dealt at random; the learners (weights, optimiser, KL
   controller, score statistics) stay where they are, only the role -> learner mapping moves.

Models are named ``model_a`` (the first pioneer), ``model_b``, ``model_c``, ...; metrics are
logged per seat (``pioneer/...``, ``observer/...``, ``observer_1/...``) and per model
(``model_a/...``), evaluation of each model alone under ``eval/model_a/...``
(:mod:`agents.run.metrics`). Evaluation, state and the loop (cadence, logging,
checkpoints, resume, plots) are the shared :class:`agents.run.trainer.Trainer`'s.
"""

from __future__ import annotations

import string
import time
from typing import Any

import numpy as np

from agents.roles import RoleAssignment, make_schedule
from agents.run.budget import lowered_budget, pioneer_budget
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
from agents.run.metrics import model_key, run_key, seat_key
from agents.run.rollout import rollout_chain
from agents.run.setup import build_agents, build_learner, build_run, load_models, value_heads
from agents.run.trainer import Trainer
from agents.run.validate import learner_names
from cory_env import seat_prefix
from cory_env.tasks.base import Task

MODELS = tuple(f"model_{c}" for c in string.ascii_lowercase)
"""Model names in model order: ``model_a`` starts as the pioneer, ``model_b`` as the first
observer, ..."""


class CoryTrainer(Trainer):
    """CORY over causal LMs: composes the vector env, K learners, the role assignment and its
    schedule. ``model`` (one, or a list of one per agent) / ``tokenizer`` / ``task`` may be
    given to skip loading."""

    models = MODELS[:2]
    """The models of the default two-agent game (an instance holds its own K)."""

    def __init__(self, config: TrainConfig, *, model=None, tokenizer=None, task: Task | None = None):
        super().__init__(config)
        k = config.num_agents
        self.models = MODELS[:k]
        models, tokenizer = load_models(config, model, tokenizer)
        names = learner_names(config)
        agents = build_agents(config, models, tokenizer, n=k, value_heads=value_heads(names), world=self.world)
        self.learners = {m: build_learner(n, a, config, i)
                         for i, (m, n, a) in enumerate(zip(self.models, names, agents, strict=True))}
        group = max(learner.samples_per_query for learner in self.learners.values())
        for m, learner in self.learners.items():
            if group % learner.samples_per_query:
                raise ValueError(
                    f"{m}'s learner wants groups of {learner.samples_per_query} samples per query, "
                    f"which does not divide the {group} another learner draws; use matching group sizes"
                )
        self.run = build_run(config, tokenizer, task, samples_per_query=group, num_agents=k,
                             world=self.world)
        bind_run(list(self.learners.values()), self.run)
        self.roles = RoleAssignment([self.learners[m] for m in self.models])
        if not config.role_exchange:
            self.schedule = make_schedule("never")
        elif config.role_schedule == "random":
            self.schedule = make_schedule("random", period=config.swap_period, seed=config.seed)
        else:
            self.schedule = make_schedule(config.swap_period)

    def model_of(self, role: str) -> str:
        """Which model plays ``role`` now (the assignment keeps the learners in model order)."""
        return self.models[self.roles.index(role)]

    def step(self, iteration: int) -> dict[str, float]:
        """One CORY iteration; returns its metrics."""
        run, t0 = self.run, time.perf_counter()
        queries, max_new = run.sample_queries()
        roles = self.roles.roles
        seated = [self.roles[role] for role in roles]
        limits = run.seat_limits(max_new)

        @self.sharded
        def roll(qs: list) -> EpisodeBatch:
            turns = rollout_chain(run.venv, [lr.agent for lr in seated], qs, run.seats, limits,
                                  run.generator)
            flags = [truncation(run.venv.infos, seat_prefix(role)) for role in roles]
            return EpisodeBatch(list(qs), turns, flags)

        episodes, rounds = refill(roll(queries), lambda: roll(run.draw_queries()),
                                  dropping_seats(seated), run.samples_per_query,
                                  self.config.batch_size, self.config.refill_rounds)
        queries = episodes.queries
        t_rollout = time.perf_counter() - t0
        metrics: dict[str, float] = {}
        budget = (pioneer_budget(episodes.turns[0], seated[0].config.mini_batch_size)
                  if self.config.observer_token_budget else None)
        for j, (role, learner) in enumerate(zip(roles, seated, strict=True)):
            turns = episodes.turns[j]
            with lowered_budget(learner, budget if j else None):  # observers: the pioneer's memory
                stats = update(self, learner, turns, episodes.truncated[j])
            if dropping_seats([learner]):
                stats[f"{learner.name}/refill_rounds"] = float(rounds)
            model = self.model_of(role)
            metrics.update({seat_key(role, k): v for k, v in stats.items()})
            metrics.update({
                model_key(model, "score"): float(turns.scores.mean()),
                model_key(model, "kl"): stats.get("objective/kl", float("nan")),
                model_key(model, "role"): float(j),
                seat_key(role, "score"): float(turns.scores.mean()),
                seat_key(role, "length"): float(np.mean([len(r) for r in turns.responses])),
                **{seat_key(role, k): v for k, v in collapse_stats(turns.texts).items()},
            })
        swapped = self.roles.maybe_swap(self.schedule, iteration)
        first = episodes.turns[0]
        metrics.update({
            run_key("reward"): float(first.rewards.mean()),
            run_key("kl"): float(np.mean([metrics[model_key(m, "kl")] for m in self.models])),
            run_key("max_new_tokens"): float(max_new),
            run_key("swapped"): float(swapped),
            run_key("num_swaps"): float(self.roles.num_swaps),
            run_key("refill_rounds"): float(rounds),
            run_key("episodes"): float(len(queries) * (1 + rounds)),
            run_key("rollout_s"): t_rollout,
            run_key("iteration_s"): time.perf_counter() - t0,
        })
        self.samples = []
        for i, q in enumerate(queries):
            sample: dict[str, Any] = {"query": str(q)}
            sample.update({seat_prefix(r): episodes.turns[j].texts[i] for j, r in enumerate(roles)})
            sample.update({f"{seat_prefix(r)}_score": float(episodes.turns[j].scores[i])
                           for j, r in enumerate(roles)})
            sample["reward"] = float(first.rewards[i])
            self.samples.append(sample)
        return metrics

    def extra_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"roles": self.roles.state_dict()}
        if hasattr(self.schedule, "state_dict"):
            state["schedule"] = self.schedule.state_dict()
        return state

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.roles.load_state_dict(state["roles"])
        if hasattr(self.schedule, "load_state_dict"):
            self.schedule.load_state_dict(state["schedule"])
