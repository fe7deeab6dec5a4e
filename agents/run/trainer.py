"""``Trainer``: what the CORY trainer and the single-agent PPO baseline share.

A trainer holds ``learners`` (model name -> learner, fixed for the whole run, so a
checkpoint names each model's state), a :class:`agents.run.setup.Run` (task, envs, random
streams) and the texts of its last step. This base gives it evaluation of every model
alone, its state for checkpoints, and ``train``; a trainer supplies only ``step``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from agents.distributed import gather, shard, world
from agents.policy.export import export_agent
from agents.rl.batch import TokenBatch
from agents.run.config import TrainConfig
from agents.run.episode_batch import EpisodeBatch
from agents.run.evaluate import evaluate_alone
from agents.run.loop import fit
from agents.run.metrics import eval_key
from agents.run.rollout import Turns
from agents.run.setup import Run, model_names

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
        self.world = world()
        """This run's processes (:mod:`agents.distributed`; size 1 without a launcher)."""

    def sharded(self, roll: Callable[[list], EpisodeBatch]) -> Callable[[list], EpisodeBatch]:
        """``roll`` (queries -> episodes) data-parallel: this process rolls out its contiguous
        shard of the queries and every process gets all the episodes, in query order."""
        w = self.world
        if not w.parallel:
            return roll
        return lambda queries: EpisodeBatch.concat(gather(roll(shard(queries, w)), w))

    def step(self, iteration: int) -> dict[str, float]:
        """One training iteration; returns its metrics."""
        raise NotImplementedError

    def update(self, learner, turns: Turns, **kwargs: Any) -> dict[str, float]:
        """``learner``'s update on one role's side of the episodes and the reward it got
        (``kwargs`` go to ``learner.update``, e.g. GRPO's ``truncated``)."""
        batch = TokenBatch.from_lists(turns.prompts, turns.responses, self.run.pad_id,
                                      device=learner.agent.device)
        return learner.update(batch, turns.rewards, **kwargs)

    def evaluate(self) -> dict[str, float]:
        """Each model alone, from the query-only prompt, on the held-out queries; every model
        samples with the same random numbers."""
        run, out = self.run, {}
        for model, learner in self.learners.items():
            stats, _ = evaluate_alone(
                learner.agent, run.eval_venv, run.task, run.eval_queries, run.generation,
                run.generation.max_new_tokens, seed=self.config.seed + EVAL_SEED_OFFSET,
                pad_id=run.pad_id,
            )
            out.update({eval_key(model, k): v for k, v in stats.items()})
        return out

    def apply_settings(self, changes: dict[str, tuple[Any, Any]]) -> None:
        """Apply settings changed on resume (:data:`agents.run.resume.CHANGEABLE`) to the
        restored learners: the learning rate to their optimisers, the KL targets to their
        controllers and configs. The loop reads the others from the config itself."""
        updates = {k: new for k, (_, new) in changes.items()
                   if k in ("learning_rate", "target", "target_kl")}
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

    def export_models(self, folder: str | Path) -> list[Path]:
        """Every model in Hugging Face format under ``folder/<model>/`` (a peft adapter or a
        full model, the tokenizer, the value head; :mod:`agents.policy.export`). Every process
        calls it; the main one writes."""
        if not (self.world.is_main or self.world.fsdp):
            return []
        bases = model_names(self.config) if len(self.learners) > 1 else [self.config.model]
        return [export_agent(lr.agent, Path(folder) / name, base_model=base)
                for (name, lr), base in zip(self.learners.items(), bases)]

    def extra_state(self) -> dict[str, Any]:
        """State beyond the learners and random streams (e.g. the role assignment)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`extra_state` returned."""

    def state_dict(self) -> dict[str, Any]:
        return {
            "learners": {m: {"agent": lr.agent.state_dict(), "learner": lr.state_dict()}
                         for m, lr in self.learners.items()},
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
                raise ValueError(f"this checkpoint was written by a single process; the run now has "
                                 f"{self.world.size}: resume it with one process")
            return saved
        if len(saved["ranks"]) != self.world.size:
            raise ValueError(f"this checkpoint was written by {len(saved['ranks'])} processes; the run "
                             f"now has {self.world.size}: resume it with as many as wrote it")
        return saved["ranks"][self.world.rank]

    def train(self, stop_after: int | None = None) -> list[dict[str, Any]]:
        """Run the configured iterations (resuming if asked); returns the metric rows."""
        return fit(self, self.config, stop_after=stop_after)
