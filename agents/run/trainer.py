"""``Trainer``: what the CORY trainer and the single-agent trainer share.

A trainer holds ``learners`` (model name -> learner, fixed for the whole run, so a
checkpoint names each model's state), a :class:`agents.run.envs.Run` (task, envs, random
streams) and the texts of its last step. This base builds the learners (each given the
run's world and answer length), rolls out one iteration's episodes through the env (with
the refill rounds), makes the one update call of a learner, evaluates every model alone,
keeps the state for checkpoints, and ``train``s; a trainer supplies only ``step``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from agents.distributed import gather, shard, world
from agents.policy.export import export_agent
from agents.policy.model_card import ModelCard
from agents.rl.batch import TokenBatch
from agents.run.config import TrainConfig
from agents.run.envs import Run
from agents.run.episode_batch import EpisodeBatch, dropping_seats, play_chain, refill
from agents.run.evaluate import evaluate_alone
from agents.run.loop import fit
from agents.run.metrics import eval_key, run_key
from agents.run.rollout import Turns
from agents.run.setup import build_learner
from cory_env.tasks.base import GenerationConfig

EVAL_SEED_OFFSET = 7919
"""Evaluation samples with a generator seeded ``seed + EVAL_SEED_OFFSET``, the same for every
evaluation and every model of a run (and for the PPO baseline at the same seed)."""


class Trainer:
    """The shared half of a trainer; subclasses set ``models``, ``learners``, ``run`` and
    implement :meth:`step`."""

    models: tuple[str, ...] = ()
    config: TrainConfig
    learners: dict[str, Any]
    run: Run

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.samples: list[dict[str, Any]] = []
        self.world = world(config.collective_timeout)
        """This run's processes (:mod:`agents.distributed`; size 1 without a launcher)."""

    def sharded(self, roll: Callable[[list], EpisodeBatch]) -> Callable[[list], EpisodeBatch]:
        """``roll`` (queries -> episodes) data-parallel: this process rolls out its contiguous
        shard of the queries and every process gets all the episodes, in query order."""
        w = self.world
        if not w.parallel:
            return roll
        return lambda queries: EpisodeBatch.concat(gather(roll(shard(queries, w)), w))

    def build_learners(
        self, names: Sequence[str], agents: Sequence[Any], answer_length: int
    ) -> dict[str, Any]:
        """Model ``models[i]``'s learner: ``names[i]`` over ``agents[i]`` (seeded by ``i``),
        given the run's world and its answer length (the generation's ``max_new_tokens``)."""
        pairs = zip(self.models, names, agents, strict=True)
        return {
            m: build_learner(
                n, a, self.config, i, world=self.world, max_answer_length=answer_length
            )
            for i, (m, n, a) in enumerate(pairs)
        }

    def roll_out(
        self,
        seated: Sequence[Any],
        generations: Sequence[GenerationConfig],
        max_new_tokens: int | Sequence[int],
        queries: list,
    ) -> tuple[EpisodeBatch, int]:
        """``(episodes, extra rounds)``: ``seated[j]``'s agent plays seat ``j`` of the env's
        chain, to its end, on ``queries`` (this process its shard), topped up by the refill
        rounds of the learners that drop uniform groups
        (:func:`agents.run.episode_batch.refill`)."""
        run, agents = self.run, [learner.agent for learner in seated]

        @self.sharded
        def roll(qs: list) -> EpisodeBatch:
            venv = run.venv_for([a.tokenizer for a in agents])  # each model in its own ids
            return play_chain(venv, agents, qs, generations, max_new_tokens, run.generator)

        return refill(
            roll(queries),
            lambda: roll(run.draw_queries()),
            dropping_seats(seated),
            run.samples_per_query,
            self.config.batch_size,
            self.config.refill_rounds,
        )

    def step(self, iteration: int) -> dict[str, float]:
        """One training iteration; returns its metrics."""
        raise NotImplementedError

    def update(
        self,
        learner,
        turns: Turns,
        truncated: np.ndarray | None = None,
        token_budget: int | None = None,
    ) -> dict[str, float]:
        """``learner``'s update on one seat's side of the episodes, the reward it got, the
        env's truncation flags ``(n,)`` (answers cut at the turn's token limit) and the
        update's micro-batch token budget (None: the learner's own)."""
        batch = TokenBatch.from_lists(
            turns.prompts, turns.responses, learner.agent.pad_id, device=learner.agent.device
        )
        return learner.update(batch, turns.rewards, truncated=truncated, token_budget=token_budget)

    def learn(
        self,
        learner,
        episodes: EpisodeBatch,
        seat: int,
        rounds: int,
        token_budget: int | None = None,
    ) -> dict[str, float]:
        """:meth:`update` on seat ``seat`` of ``episodes`` (within ``token_budget``), with the
        refill ``rounds`` among the stats of a learner that drops uniform groups."""
        stats = self.update(learner, episodes.turns[seat], episodes.truncated[seat], token_budget)
        if dropping_seats([learner]):
            stats[f"{learner.name}/refill_rounds"] = float(rounds)
        return stats

    def run_metrics(
        self,
        episodes: EpisodeBatch,
        kl: float,
        max_new: int,
        rounds: int,
        started: float,
        rollout_s: float,
        **extra: float,
    ) -> dict[str, float]:
        """The run-wide metrics of an iteration that ``started`` (``time.perf_counter()``)
        and rolled out for ``rollout_s`` seconds: the reward the first seat received, the KL,
        the answer length, ``extra`` (e.g. the swaps), the refill rounds, the episodes rolled
        out and the times (``charts/...``)."""
        received = episodes.turns[0].rewards
        assert received is not None, "rollout_chain gives every turn its rewards"
        return {
            run_key("reward"): float(received.mean()),
            run_key("kl"): kl,
            run_key("max_new_tokens"): float(max_new),
            **{run_key(k): float(v) for k, v in extra.items()},
            run_key("refill_rounds"): float(rounds),
            run_key("episodes"): float(len(episodes.queries) * (1 + rounds)),
            run_key("rollout_s"): rollout_s,
            run_key("iteration_s"): time.perf_counter() - started,
        }

    def evaluate(self) -> dict[str, float]:
        """Each model alone, from the query-only prompt, on the held-out queries; every model
        samples with the same random numbers."""
        run, out = self.run, {}
        for model, learner in self.learners.items():
            stats, _ = evaluate_alone(
                learner.agent,
                run.eval_venv_for(learner.agent.tokenizer),
                run.eval_queries,
                run.generation,
                run.generation.max_new_tokens,
                seed=self.config.seed + EVAL_SEED_OFFSET,
                pad_id=learner.agent.pad_id,
            )
            out.update({eval_key(model, k): v for k, v in stats.items()})
        return out

    def apply_settings(self, changes: dict[str, tuple[Any, Any]]) -> None:
        """Apply settings changed on resume (:data:`agents.run.resume.CHANGEABLE`) to the
        restored learners: the learning rate to their optimisers, the KL targets to their
        controllers and configs. The loop reads the others from the config itself."""
        updates = {
            k: new
            for k, (_, new) in changes.items()
            if k in ("learning_rate", "target", "target_kl")
        }
        if not updates:
            return
        for learner in self.learners.values():
            if "learning_rate" in updates and hasattr(learner, "optimizer"):
                for group in learner.optimizer.param_groups:
                    group["lr"] = updates["learning_rate"]
            if "target" in updates and hasattr(learner.kl_ctl, "target"):
                learner.kl_ctl.target = float(updates["target"])
            if hasattr(learner, "config"):
                learner.config = replace(learner.config, **updates)

    @property
    def method(self) -> str:
        """What the exported models' cards say trained them."""
        return "CORY"

    def export_models(self, folder: str | Path) -> list[Path]:
        """Every model in Hugging Face format under ``folder/<model>/`` (a peft adapter or a
        full model, the tokenizer, the value head; :mod:`agents.policy.export`). Every process
        calls it; the main one writes."""
        if not (self.world.is_main or self.world.fsdp):
            return []
        task = self.config.task_path or self.config.task
        return [
            export_agent(
                lr.agent, Path(folder) / name, card=ModelCard(name, task, method=self.method)
            )
            for name, lr in self.learners.items()
        ]

    def extra_state(self) -> dict[str, Any]:
        """State beyond the learners and random streams (e.g. the role assignment)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`extra_state` returned."""

    def state_dict(self) -> dict[str, Any]:
        return {
            "learners": {
                m: {"agent": lr.agent.state_dict(), "learner": lr.state_dict()}
                for m, lr in self.learners.items()
            },
            "random": self._random_state(),
            **self.extra_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for m, lr in self.learners.items():
            lr.agent.load_state_dict(state["learners"][m]["agent"])
            lr.load_state_dict(state["learners"][m]["learner"])
        self.run.load_random_state(self._own_random_state(state["random"]))
        self.load_extra_state(state)

    def _random_state(self) -> dict[str, Any]:
        """The run's random streams; data-parallel, every process's (``{"ranks": [...]}``)."""
        own = self.run.random_state()
        return {"ranks": gather(own, self.world)} if self.world.parallel else own

    def _own_random_state(self, saved: dict[str, Any]) -> dict[str, Any]:
        if "ranks" not in saved:
            if self.world.parallel:
                raise ValueError(
                    "this checkpoint was written by a single process; the run now "
                    f"has {self.world.size}: resume it with one process"
                )
            return saved
        if len(saved["ranks"]) != self.world.size:
            raise ValueError(
                f"this checkpoint was written by {len(saved['ranks'])} processes; "
                f"the run now has {self.world.size}: resume it with as many as "
                "wrote it"
            )
        return saved["ranks"][self.world.rank]

    def train(self, stop_after: int | None = None) -> list[dict[str, Any]]:
        """Run the configured iterations (resuming if asked); returns the metric rows."""
        return fit(self, self.config, stop_after=stop_after)
