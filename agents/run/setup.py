"""Building a run from its config: task, model, agents, learners, envs and random streams.

Shared by the CORY trainer and the single-agent PPO baseline, so both see the same
queries, generation settings and evaluation.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

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
from agents.policy.tokenizers import per_model_tokenizers
from agents.rl.learner import learner_uses_values, make_learner
from agents.run.config import TrainConfig
from agents.run.learner_config import grpo_options, learner_config
from agents.run.resume import check_output
from agents.run.validate import task_options
from cory_env.registry import is_import_path
from cory_env.rewards import available_rewards, make_reward
from cory_env.tasks import Task, make_task
from cory_env.tasks.loading import is_local_path


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
    given the same model object share it) and ``tokenizer`` (one, or one per agent): LoRA adapters on one frozen base per model (whose
    adapters-off forward is that model's reference), or full copies sharing one frozen
    reference per model. ``value_heads[i]``: whether agent ``i`` gets a value head (None: all).
    A ``world`` launched with FSDP gets its full copies sharded (:mod:`agents.policy.sharding`)."""
    if world.fsdp:
        check_sharding(config)
    torch.manual_seed(config.seed)
    heads = [True] * n if value_heads is None else list(value_heads)
    models = list(model) if isinstance(model, (list, tuple)) else [model] * n
    tokenizers = list(tokenizer) if isinstance(tokenizer, (list, tuple)) else [tokenizer] * n
    groups: dict[int, list[int]] = {}
    for i, m in enumerate(models):
        groups.setdefault(id(m), []).append(i)
    # sharded: built on the CPU, each process's shards then go to the device (never a whole copy)
    dtype, device = config.dtype, "cpu" if world.fsdp else config.device
    built: dict[int, LLMAgent] = {}
    for idx in groups.values():
        base, tokenizer = models[idx[0]], tokenizers[idx[0]]  # one model, one tokenizer
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
            agent.fast_lora = config.fast_lora
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
) -> tuple[list, list]:
    """One model per agent (the same object where agents start from the same model) and
    one tokenizer per agent (:func:`agents.policy.tokenizers.per_model_tokenizers`: one
    object for models whose tokenizers match), loaded for ``world``'s processes. ``model``
    may be one model or a list of one per agent, ``tokenizer`` one or a list (tests). Each
    distinct model's tokenizer is checked before any weights load."""
    k = config.num_agents
    if model is not None:
        models = list(model) if isinstance(model, (list, tuple)) else [model] * k
        toks = list(tokenizer) if isinstance(tokenizer, (list, tuple)) else [tokenizer] * k
        load(config, models[0], toks[0], world)
        if len(models) != k or len(toks) != k:
            raise ValueError(f"{len(models)} models and {len(toks)} tokenizers for {k} agents")
        return models, per_model_tokenizers([(f"model {i}", t) for i, t in enumerate(toks)])
    preflight(config, world)
    names = model_names(config)
    distinct = list(dict.fromkeys(names))
    if len(distinct) > 1:
        per_model_tokenizers([(n, load_tokenizer(n)) for n in distinct])
    loaded = {n: _load_model(config, n, world) for n in distinct}
    own = dict(zip(distinct, per_model_tokenizers([(n, loaded[n][1]) for n in distinct])))
    return [loaded[n][0] for n in names], [own[n] for n in names]


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
