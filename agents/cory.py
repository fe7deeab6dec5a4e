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
from collections.abc import Sequence
from typing import Any

import numpy as np

from agents.roles import RoleAssignment, make_schedule
from agents.run.budget import pioneer_budget
from agents.run.config import TrainConfig
from agents.run.envs import build_run
from agents.run.episode_batch import EpisodeBatch
from agents.run.evaluate import collapse_stats
from agents.run.generation import generation_of
from agents.run.metrics import model_key, seat_key
from agents.run.rollout import Turns
from agents.run.setup import build_agents, build_task, load_models, value_heads
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

    def __init__(
        self, config: TrainConfig, *, model=None, tokenizer=None, task: Task | None = None
    ):
        super().__init__(config)
        num_agents = config.num_agents
        self.models = MODELS[:num_agents]
        models, tokenizer = load_models(config, model, tokenizer, world=self.world)
        names = learner_names(config)
        agents = build_agents(
            config,
            models,
            tokenizer,
            n=num_agents,
            value_heads=value_heads(names),
            world=self.world,
        )
        task = build_task(config, task)
        answer_length = generation_of(config, task).max_new_tokens
        self.learners = self.build_learners(names, agents, answer_length)
        self.run = build_run(
            config,
            tokenizer,
            task,
            samples_per_query=self._group_size(),
            num_agents=num_agents,
            world=self.world,
        )
        self.roles = RoleAssignment([self.learners[m] for m in self.models])
        if not config.role_exchange:
            self.schedule = make_schedule("never")
        elif config.role_schedule == "random":
            self.schedule = make_schedule("random", period=config.swap_period, seed=config.seed)
        else:
            self.schedule = make_schedule(config.swap_period)

    def _group_size(self) -> int:
        """The samples per query the run draws: the most any learner asks for, which every
        other learner's must divide."""
        group = max(learner.samples_per_query for learner in self.learners.values())
        for m, learner in self.learners.items():
            if group % learner.samples_per_query:
                raise ValueError(
                    f"{m}'s learner wants groups of {learner.samples_per_query} samples per query, "
                    f"which does not divide the {group} another learner draws; use matching "
                    "group sizes"
                )
        return group

    def model_of(self, role: str) -> str:
        """Which model plays ``role`` now (the assignment keeps the learners in model order)."""
        return self.models[self.roles.index(role)]

    def step(self, iteration: int) -> dict[str, float]:
        """One CORY iteration (the module docstring's five steps); returns its metrics."""
        run, t0 = self.run, time.perf_counter()
        queries, max_new = run.sample_queries()
        roles = self.roles.roles
        seated = [self.roles[role] for role in roles]
        assert run.seats is not None, "build_run sets every seat's sampling"
        episodes, rounds = self.roll_out(seated, run.seats, run.seat_limits(max_new), queries)
        t_rollout = time.perf_counter() - t0
        metrics = self._learn_seats(episodes, roles, seated, rounds)
        swapped = self.roles.maybe_swap(self.schedule, iteration)
        kl = float(np.mean([metrics[model_key(m, "kl")] for m in self.models]))
        metrics.update(
            self.run_metrics(
                episodes,
                kl,
                max_new,
                rounds,
                t0,
                t_rollout,
                swapped=swapped,
                num_swaps=self.roles.num_swaps,
            )
        )
        self.samples = chain_samples(episodes, roles)
        return metrics

    def _learn_seats(
        self, episodes: EpisodeBatch, roles: Sequence[str], seated: Sequence[Any], rounds: int
    ) -> dict[str, float]:
        """Each seat's learner updated on its side of ``episodes`` (an observer's micro-batches
        within the pioneer's token budget with ``observer_token_budget``); the seats' and the
        models' metrics."""
        budget = (
            pioneer_budget(episodes.turns[0], seated[0].config.mini_batch_size)
            if self.config.observer_token_budget
            else None
        )
        metrics: dict[str, float] = {}
        for j, (role, learner) in enumerate(zip(roles, seated, strict=True)):
            # observers within the pioneer's memory
            stats = self.learn(learner, episodes, j, rounds, budget if j else None)
            metrics.update(seat_metrics(role, self.model_of(role), j, episodes.turns[j], stats))
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


def seat_metrics(
    role: str, model: str, seat: int, turns: Turns, stats: dict[str, float]
) -> dict[str, float]:
    """One seat's metrics: its learner's ``stats`` under the seat, and the score, KL and seat
    of the ``model`` that played it, the seat's score, answer length and collapse signs."""
    assert turns.scores is not None, "rollout_chain scores every turn"
    score = float(turns.scores.mean())
    return {
        **{seat_key(role, name): v for name, v in stats.items()},
        model_key(model, "score"): score,
        model_key(model, "kl"): stats.get("objective/kl", float("nan")),
        model_key(model, "role"): float(seat),
        seat_key(role, "score"): score,
        seat_key(role, "length"): float(np.mean([len(r) for r in turns.responses])),
        **{seat_key(role, name): v for name, v in collapse_stats(turns.texts).items()},
    }


def chain_samples(episodes: EpisodeBatch, roles: Sequence[str]) -> list[dict[str, Any]]:
    """The texts of an iteration, one row per episode: the query, each seat's answer and
    score, and the reward the first seat received."""
    scores: list[np.ndarray] = []
    for t in episodes.turns:
        assert t.scores is not None, "rollout_chain scores every turn"
        scores.append(t.scores)
    received = episodes.turns[0].rewards
    assert received is not None, "rollout_chain gives every turn its rewards"
    rows = []
    for i, q in enumerate(episodes.queries):
        row: dict[str, Any] = {"query": str(q)}
        row.update({seat_prefix(r): episodes.turns[j].texts[i] for j, r in enumerate(roles)})
        row.update({f"{seat_prefix(r)}_score": float(scores[j][i]) for j, r in enumerate(roles)})
        row["reward"] = float(received[i])
        rows.append(row)
    return rows
