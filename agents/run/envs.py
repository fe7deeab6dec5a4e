"""The envs and random streams a trainer runs on (:class:`Run`, built by :func:`build_run`).

Each model acts in its own tokenizer's ids and the env hands text between seats, so the
training env depends on which model sits where: :meth:`Run.venv_for` gives the env of a
seating (the tokenizers in seat order), built once and kept, and role exchange, which moves
each model with its tokenizer, switches between them. Models that share a tokenizer share
one object, and a seating of one tokenizer gets the env of that one tokenizer, exactly as a
run of one model. Each model is evaluated alone, in its own tokenizer's evaluation env
(:meth:`Run.eval_venv_for`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from agents.distributed import SINGLE, World
from agents.run.config import TrainConfig
from agents.run.generation import generation_of, seat_generations
from cory_env.tasks import GenerationConfig, Query, Task
from cory_env.vector import CoryTextVecEnv

__all__ = ["RANK_SEED_STRIDE", "Run", "build_run"]

RANK_SEED_STRIDE = 1_000_003
"""Process ``r`` of a data-parallel run samples with the seed ``seed + r * RANK_SEED_STRIDE``."""


@dataclass
class Run:
    """What a trainer is built from: the task, the tokenizers, the envs and random streams."""

    config: TrainConfig
    task: Task
    tokenizer: Any
    """The first model's tokenizer (every model's, when they share one)."""
    generation: GenerationConfig
    venv: CoryTextVecEnv
    """The training env of the first seating (models in model order)."""
    eval_venv: CoryTextVecEnv | None
    """The evaluation env in the first model's tokenizer (None: no evaluation)."""
    eval_queries: list[Query]
    rng: np.random.Generator
    generator: torch.Generator
    samples_per_query: int = 1
    seats: list[GenerationConfig] | None = None
    """Each seat's sampling settings (:func:`seat_generations`)."""
    world: World = SINGLE
    """The run's processes: ``venv`` holds this process's shard of a batch, ``generator``
    is this process's own sampling stream (:mod:`agents.distributed`)."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """The training env's arguments besides its tokenizers."""
    eval_kwargs: dict[str, Any] = field(default_factory=dict)
    """The evaluation env's arguments besides its tokenizer."""
    _venvs: dict[tuple[int, ...], CoryTextVecEnv] = field(default_factory=dict, repr=False)
    _eval_venvs: dict[int, CoryTextVecEnv] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.eval_venv is not None:
            self._eval_venvs[id(self.tokenizer)] = self.eval_venv

    def venv_for(self, tokenizers: Sequence[Any]) -> CoryTextVecEnv:
        """The training env whose seat ``j`` acts in ``tokenizers[j]`` (built on first use)."""
        key = _seating_key(tokenizers)
        if key not in self._venvs:
            one = all(t is tokenizers[0] for t in tokenizers)
            self._venvs[key] = CoryTextVecEnv(
                tokenizer=tokenizers[0] if one else list(tokenizers), **self.env_kwargs
            )
        return self._venvs[key]

    def eval_venv_for(self, tokenizer: Any) -> CoryTextVecEnv | None:
        """The evaluation env in ``tokenizer``'s ids (None when the run does not evaluate)."""
        if self.eval_venv is None:
            return None
        if id(tokenizer) not in self._eval_venvs:
            self._eval_venvs[id(tokenizer)] = CoryTextVecEnv(
                tokenizer=tokenizer, **self.eval_kwargs
            )
        return self._eval_venvs[id(tokenizer)]

    def seat_limits(self, max_new: int) -> list[int]:
        """Each seat's answer length this batch: its own ``--seat-max-new-tokens``, else the
        batch's ``max_new``."""
        own = self.config.seat_max_new_tokens
        return [int(own[j]) if own else int(max_new) for j in range(len(self.seats or [0, 0]))]

    @property
    def pad_id(self) -> int:
        """The first model's pad id (its tokenizer's pad token, else its EOS)."""
        tok = self.tokenizer
        return tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    def sample_queries(self) -> tuple[list[Query], int]:
        """The next batch of training queries (each repeated ``samples_per_query`` times,
        consecutively) and this batch's answer length."""
        queries = self.draw_queries()
        gen = self.generation
        if gen.min_new_tokens is None:
            return queries, gen.max_new_tokens
        return queries, int(self.rng.integers(gen.min_new_tokens, gen.max_new_tokens + 1))

    def draw_queries(self) -> list[Query]:
        """``batch_size`` training queries, each repeated ``samples_per_query`` times,
        consecutively (a refill round draws these alone: its answer length is the batch's)."""
        pool = self.task.queries("train")
        n = self.config.batch_size
        idx = self.rng.choice(len(pool), size=n, replace=len(pool) < n)
        return [pool[i] for i in idx for _ in range(self.samples_per_query)]

    def random_state(self) -> dict:
        return {"rng": self.rng.bit_generator.state, "generator": self.generator.get_state()}

    def load_random_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.generator.set_state(state["generator"])


def _seating_key(tokenizers: Sequence[Any]) -> tuple[int, ...]:
    return tuple(id(t) for t in tokenizers)


def build_run(
    config: TrainConfig,
    tokenizer: Any,
    task: Task | None = None,
    samples_per_query: int = 1,
    num_agents: int = 2,
    world: World = SINGLE,
) -> Run:
    """Envs and random streams for ``config`` (the models are loaded by the caller);
    ``tokenizer``: one for every model, or one per model in model order (the first seating);
    ``task``: the run's task as :func:`agents.run.setup.build_task` made it (None: built
    here). The training env plays chains of ``num_agents`` (1: the pioneer alone, the
    single-agent trainer) and holds this process's shard of a batch; the evaluation env
    plays one agent (each model alone)."""
    if config.batch_size % world.size:
        raise ValueError(
            f"batch_size {config.batch_size} must split evenly over the run's "
            f"{world.size} processes"
        )
    if task is None:
        from agents.run.setup import build_task

        task = build_task(config)
    tokenizers = list(tokenizer) if isinstance(tokenizer, (list, tuple)) else [tokenizer]
    generation = generation_of(config, task)
    seats = seat_generations(config, generation)[:num_agents]
    longest = max([generation.max_new_tokens, *(config.seat_max_new_tokens or [])])
    common: dict[str, Any] = dict(task=task, reward_mode=config.reward_mode)
    env_kwargs: dict[str, Any] = dict(
        common,
        max_new_tokens=longest,
        num_envs=config.batch_size // world.size * samples_per_query,
        num_agents=num_agents,
    )
    eval_pool = list(task.queries("eval"))[: config.eval_size]
    eval_kwargs: dict[str, Any] = dict(
        common, max_new_tokens=generation.max_new_tokens, num_envs=len(eval_pool), num_agents=1
    )
    first = tokenizers[0]
    seating = (tokenizers * num_agents)[:num_agents] if len(tokenizers) == 1 else tokenizers
    one = all(t is first for t in seating)
    venv = CoryTextVecEnv(tokenizer=first if one else list(seating), **env_kwargs)
    run = Run(
        config=config,
        task=task,
        tokenizer=first,
        generation=generation,
        venv=venv,
        eval_venv=CoryTextVecEnv(tokenizer=first, **eval_kwargs) if config.eval_every else None,
        eval_queries=eval_pool,
        rng=np.random.default_rng(config.seed),
        generator=torch.Generator(device=config.device).manual_seed(
            config.seed + world.rank * RANK_SEED_STRIDE
        ),
        samples_per_query=samples_per_query,
        seats=seats,
        world=world,
        env_kwargs=env_kwargs,
        eval_kwargs=eval_kwargs,
    )
    run._venvs[_seating_key(seating)] = venv
    return run
