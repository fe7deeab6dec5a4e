"""Building a run from its config: task, model, agents, learners, envs and random streams.

Shared by the CORY trainer and the single-agent PPO baseline, so both see the same
queries, generation settings and evaluation.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.distributed import SINGLE, World, main_first
from agents.policy.agent import LLMAgent
from agents.policy.construction import enable_activation_checkpointing
from agents.policy.loading import (
    CPU_INSTRUCTIONS,
    check_4bit,
    cpu_computes_natively,
    load_model,
    load_tokenizer,
)
from agents.policy.sharding import check_sharding, shard_agents, weights_from_main
from agents.policy.tokenizers import check_same_tokenizer
from agents.rl.learner import learner_uses_values, make_learner
from agents.run.config import TrainConfig
from agents.run.generation import generation_of, seat_generations
from agents.run.learner_config import grpo_options, learner_config
from agents.run.resume import check_output
from agents.run.validate import task_options
from cory_env.registry import is_import_path
from cory_env.rewards import available_rewards, make_reward
from cory_env.tasks import GenerationConfig, Query, Task, make_task
from cory_env.tasks.loading import is_local_path
from cory_env.vector import CoryTextVecEnv


def task_data(config: TrainConfig) -> Task:
    """The configured task as its registry (or its factory's import path) builds it: its
    data read, its own reward."""
    kwargs: dict[str, object] = {"path": config.task_path} if config.task_path else {}
    kwargs.update(task_options(config.task_options))
    try:
        return make_task(config.task, **kwargs)
    except TypeError as error:  # an option the task's factory does not take
        raise ValueError(
            f"task {config.task!r} does not take these options {sorted(kwargs)}: {error}"
        ) from None


def build_task(config: TrainConfig, task: Task | None = None) -> Task:
    """The configured task, with the reward override (a name or ``module:function``) and
    the knowledge-transfer ablation; a task left without a reward is refused."""
    if task is None:
        task = task_data(config)
    if config.reward:
        reward_kwargs = {"model": config.reward_model} if config.reward_model else {}
        task = task.with_reward(make_reward(config.reward, **reward_kwargs))
    check_reward(task)
    if not config.knowledge_transfer:
        task = task.without_knowledge_transfer()
    return task


def check_reward(task: Task) -> None:
    """Refuse a task with no reward (``prompts`` without ``--reward``), saying how to give one."""
    if not task.has_reward:
        raise ValueError(getattr(task.reward_fn, "message", f"task {task.name!r} has no reward"))


def build_agents(
    config: TrainConfig,
    model,
    tokenizer,
    n: int,
    value_heads: Sequence[bool] | None = None,
    world: World = SINGLE,
) -> list[LLMAgent]:
    """``n`` trainable agents over ``model`` (one model, or a list of one per agent; agents
    given the same model object share it): LoRA adapters on one frozen base per model (whose
    adapters-off forward is that model's reference), or full copies sharing one frozen
    reference per model. ``value_heads[i]``: whether agent ``i`` gets a value head (None: all).
    A ``world`` launched with FSDP gets its full copies sharded (:mod:`agents.policy.sharding`)."""
    if world.fsdp:
        check_sharding(config)
    torch.manual_seed(config.seed)
    heads = [True] * n if value_heads is None else list(value_heads)
    models = list(model) if isinstance(model, (list, tuple)) else [model] * n
    groups: dict[int, list[int]] = {}
    for i, m in enumerate(models):
        groups.setdefault(id(m), []).append(i)
    # sharded: built on the CPU, each process's shards then go to the device (never a whole copy)
    dtype, device = config.dtype, "cpu" if world.fsdp else config.device
    built: dict[int, LLMAgent] = {}
    for idx in groups.values():
        base = models[idx[0]]
        if config.mode == "lora":
            made = LLMAgent.lora_agents(
                base,
                tokenizer,
                n=len(idx),
                r=config.lora_r,
                alpha=config.lora_alpha,
                value_heads=[heads[i] for i in idx],
                dtype=dtype,
                device=device,
            )
        else:
            reference = copy.deepcopy(base)
            made = [
                LLMAgent.full_copy(
                    copy.deepcopy(base) if j < len(idx) - 1 else base,
                    tokenizer,
                    reference=reference,
                    value_head=heads[i],
                    dtype=dtype,
                    device=device,
                )
                for j, i in enumerate(idx)
            ]
        for i, agent in zip(idx, made, strict=True):
            agent.packing = config.pack_sequences
            built[i] = agent
    agents = [built[i] for i in range(n)]
    if config.activation_checkpointing:
        for trained in {id(a.model): a.model for a in agents}.values():
            enable_activation_checkpointing(trained)
    if world.fsdp:
        shard_agents(agents, world, config.device)
    return agents


def value_heads(names: Sequence[str]) -> list[bool]:
    """Whether each named learner needs a value head (none is built for the others)."""
    return [learner_uses_values(name) for name in names]


def build_learner(
    name: str,
    agent: LLMAgent,
    config: TrainConfig,
    index: int = 0,
    *,
    world: World = SINGLE,
    max_answer_length: int | None = None,
):
    """A learner by name over ``agent`` in the run's ``world``; each gets its own seed for
    mini-batch shuffling. GRPO also gets the run's answer length ``max_answer_length`` (the
    generation's ``max_new_tokens``: Dr. GRPO's constant) and its options."""
    shared = replace(learner_config(config), seed=config.seed + 1000 * (index + 1))
    if name == "rloo":
        return make_learner("rloo", agent, config=shared, world=world, group_size=config.group_size)
    if name == "grpo":
        return make_learner(
            "grpo",
            agent,
            config=shared,
            world=world,
            group_size=config.group_size,
            options=grpo_options(config),
            max_answer_length=max_answer_length,
        )
    return make_learner(name, agent, config=shared, world=world)


@dataclass
class Run:
    """What a trainer is built from: the task, the tokenizer, the envs and random streams."""

    config: TrainConfig
    task: Task
    tokenizer: Any
    generation: GenerationConfig
    venv: CoryTextVecEnv
    eval_venv: CoryTextVecEnv | None
    eval_queries: list[Query]
    rng: np.random.Generator
    generator: torch.Generator
    samples_per_query: int = 1
    seats: list[GenerationConfig] | None = None
    """Each seat's sampling settings (:func:`seat_generations`)."""
    world: World = SINGLE
    """The run's processes: ``venv`` holds this process's shard of a batch, ``generator``
    is this process's own sampling stream (:mod:`agents.distributed`)."""

    def seat_limits(self, max_new: int) -> list[int]:
        """Each seat's answer length this batch: its own ``--seat-max-new-tokens``, else the
        batch's ``max_new``."""
        own = self.config.seat_max_new_tokens
        return [int(own[j]) if own else int(max_new) for j in range(len(self.seats or [0, 0]))]

    @property
    def pad_id(self) -> int:
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


RANK_SEED_STRIDE = 1_000_003
"""Process ``r`` of a data-parallel run samples with the seed ``seed + r * RANK_SEED_STRIDE``."""


def build_run(
    config: TrainConfig,
    tokenizer,
    task: Task | None = None,
    samples_per_query: int = 1,
    num_agents: int = 2,
    world: World = SINGLE,
) -> Run:
    """Envs and random streams for ``config`` (the model is loaded by the caller); ``task``:
    the run's task as :func:`build_task` made it (None: built here). The training env plays
    chains of ``num_agents`` (1: the pioneer alone, the single-agent trainer) and holds this
    process's shard of a batch; the evaluation env plays one agent (each model alone)."""
    if config.batch_size % world.size:
        raise ValueError(
            f"batch_size {config.batch_size} must split evenly over the run's "
            f"{world.size} processes"
        )
    task = build_task(config) if task is None else task
    generation = generation_of(config, task)
    seats = seat_generations(config, generation)[:num_agents]
    longest = max([generation.max_new_tokens, *(config.seat_max_new_tokens or [])])
    env_kwargs = dict(
        task=task, tokenizer=tokenizer, max_new_tokens=longest, reward_mode=config.reward_mode
    )
    venv = CoryTextVecEnv(
        num_envs=config.batch_size // world.size * samples_per_query,
        num_agents=num_agents,
        **env_kwargs,
    )
    env_kwargs["max_new_tokens"] = generation.max_new_tokens
    eval_pool = list(task.queries("eval"))[: config.eval_size]
    eval_venv = (
        CoryTextVecEnv(num_envs=len(eval_pool), num_agents=1, **env_kwargs)
        if config.eval_every
        else None
    )
    return Run(
        config=config,
        task=task,
        tokenizer=tokenizer,
        generation=generation,
        venv=venv,
        eval_venv=eval_venv,
        eval_queries=eval_pool,
        rng=np.random.default_rng(config.seed),
        generator=torch.Generator(device=config.device).manual_seed(
            config.seed + world.rank * RANK_SEED_STRIDE
        ),
        samples_per_query=samples_per_query,
        seats=seats,
        world=world,
    )


def preflight(config: TrainConfig, world: World = SINGLE) -> None:
    """What can be refused before a model loads (minutes for a large one): the output folder
    (a file; a run there that this config may not continue with ``world``'s processes), what
    FSDP cannot shard, the reward's name, and the task with its data (read here, so a missing
    file or an empty dataset fails now, as does a task with no reward and no ``--reward``;
    the reward, which may be a model, is built once, with the run; an import path was
    resolved with the config)."""
    check_output(config, world)
    if world.fsdp:
        check_sharding(config)
    if config.load_in_4bit:  # before minutes of download and loading
        check_4bit(config.device)
    if config.device == "cpu" and not cpu_computes_natively(config.dtype):
        warnings.warn(
            f"--dtype {config.dtype} on a CPU without {config.dtype} matmul instructions "
            f"({CPU_INSTRUCTIONS[config.dtype]}): torch emulates "
            "them, far slower than fp32 (docs/benchmarks.md); --dtype fp32 is the fast choice",
            stacklevel=2,
        )
    reward = config.reward
    if reward and not is_import_path(reward) and reward not in available_rewards():
        raise ValueError(
            f"unknown reward {reward!r}; available: {', '.join(available_rewards())} "
            "(or module:function, path/to/file.py:function)"
        )
    path = config.task_path
    if path and is_local_path(path) and not Path(path).expanduser().exists():
        raise FileNotFoundError(f"--task-path {path}: no such file")
    task = task_data(config)
    if not reward:
        check_reward(task)


def load(config: TrainConfig, model=None, tokenizer=None, world: World = SINGLE):
    """The configured model and tokenizer, unless both are given (tests, notebooks), loaded
    for ``world``'s processes; the config's inputs are checked first (:func:`preflight`)."""
    preflight(config, world)
    if model is None:
        return _load_model(config, config.model, world)
    if tokenizer is None:
        raise ValueError("pass the tokenizer together with the model")
    return model, tokenizer


def loading_device(config: TrainConfig, world: World = SINGLE) -> str:
    """Where the weights load: the run's device, or the CPU when ``world``'s processes are
    FSDP-sharded (each moves only its shards to the device, :func:`build_agents`)."""
    return "cpu" if world.fsdp else config.device


def weights_dtype(config: TrainConfig) -> str:
    """The dtype the weights load in: a LoRA run's frozen base in the compute dtype (its
    adapters and value heads train in fp32); a full fine-tune's in fp32 (master weights,
    under autocast)."""
    return config.dtype if config.mode == "lora" else "fp32"


def model_names(config: TrainConfig) -> list[str]:
    """The model each agent starts from, in model order (``--models``, else ``--model``)."""
    if config.models:
        return [m.strip() for m in config.models.split(",")]
    return [config.model] * config.num_agents


def load_models(
    config: TrainConfig, model=None, tokenizer=None, world: World = SINGLE
) -> tuple[list, object]:
    """One model per agent (the same object where agents start from the same model) and
    the shared tokenizer, loaded for ``world``'s processes. ``model`` may be one model or a
    list of one per agent (tests). Distinct models' tokenizers are compared before any
    weights load."""
    k = config.num_agents
    if model is not None:
        models = list(model) if isinstance(model, (list, tuple)) else [model] * k
        _, tokenizer = load(config, models[0], tokenizer, world)
        if len(models) != k:
            raise ValueError(f"{len(models)} models for {k} agents")
        return models, tokenizer
    preflight(config, world)
    names = model_names(config)
    distinct = list(dict.fromkeys(names))
    if len(distinct) > 1:
        check_same_tokenizer([(n, load_tokenizer(n)) for n in distinct])
    loaded = {n: _load_model(config, n, world) for n in distinct}
    return [loaded[n][0] for n in names], loaded[distinct[0]][1]


def _load_model(config: TrainConfig, name: str, world: World):
    """``(model, tokenizer)`` of ``name`` as this run loads it: on :func:`loading_device` in
    :func:`weights_dtype`; where only the main process reads the weights
    (:func:`agents.policy.sharding.weights_from_main`), it reads them first (a GGUF is
    converted into the cache once) and the others build empty models."""
    from_main = weights_from_main(world)
    with main_first(world) if from_main else contextlib.nullcontext():
        return load_model(
            name,
            dtype=config.dtype,
            device=loading_device(config, world),
            weights=weights_dtype(config),
            load_in_4bit=config.load_in_4bit,
            empty=from_main and not world.is_main,
        )
