"""Validation of a run's config, rule by rule, at construction (so at parse time): every
value out of its range is refused with the field's name, before anything loads.

The rules read the config by field; :class:`agents.run.config.TrainConfig` calls
:func:`check_config` as it is built, so this module names the config without importing it.
"""

from __future__ import annotations

import math
from typing import Any

from agents.rl.learner import available_learners, learner_samples_per_query
from cory_env.registry import is_import_path, load_object

__all__ = ["RunConfig", "check_config", "learner_names", "samples_per_query", "task_options"]

RunConfig = Any
"""A run's :class:`agents.run.config.TrainConfig` (which imports these rules: they take it by
name, so that the import runs one way)."""

_AT_LEAST_ONE = (
    "iterations",
    "batch_size",
    "mini_batch_size",
    "ppo_epochs",
    "swap_period",
    "gradient_accumulation_steps",
    "group_size",
    "eval_size",
    "checkpoint_every",
    "lora_r",
    "lora_alpha",
    "keep_checkpoints",
    "max_nonfinite_steps",
)
_POSITIVE = (
    "learning_rate",
    "cliprange",
    "cliprange_value",
    "target",
    "horizon",
    "ratio_threshold",
    "collective_timeout",
)
_NON_NEGATIVE = ("init_kl_coef", "vf_coef")
_POSITIVE_OR_NONE = ("max_grad_norm", "target_kl", "score_clip")
_AT_LEAST_ONE_OR_NONE = ("max_new_tokens", "min_new_tokens", "max_tokens_per_microbatch")
_SEAT_RULES = (
    ("seat_max_new_tokens", lambda v: int(v) == v and v >= 1),
    ("seat_temperature", lambda v: math.isfinite(v) and v >= 0),
    ("seat_top_k", lambda v: int(v) == v and v >= 0),
    ("seat_top_p", lambda v: math.isfinite(v) and 0 < v <= 1),
)


def _fail(name: str, rule: str, value) -> None:
    raise ValueError(f"{name} must be {rule}, got {value!r}")


def _is_count(value, low: int) -> bool:
    return not isinstance(value, bool) and int(value) == value and value >= low


def check_config(c: RunConfig) -> None:
    """Refuse any field out of its range, naming it: each rule in turn."""
    task_options(c.task_options)
    _check_plugins(c)
    _check_choices(c)
    _check_numbers(c)
    _check_generation(c)
    _check_chain(c)
    _check_learners(c)
    _check_groups(c)
    _check_batches(c)


def _check_plugins(c: RunConfig) -> None:
    """A task or reward given by import path (``module:function``) imports and is callable
    (what it returns is checked when it is called: the task as it is built, the reward on
    every batch)."""
    if is_import_path(c.task):
        load_object(c.task, "task")
    if c.reward and is_import_path(c.reward):
        load_object(c.reward, "reward")
        if c.reward_model:
            raise ValueError(
                f"reward_model is the classifier of --reward hf-classifier; the reward "
                f"{c.reward!r} is a function of your own and takes none"
            )


def _check_choices(c: RunConfig) -> None:
    """Settings that only go together, and the outputs."""
    if c.load_in_4bit and c.mode != "lora":
        raise ValueError(
            "load_in_4bit trains LoRA adapters on a frozen 4-bit base: it needs --mode lora"
        )
    if not c.log_with or set(c.log_with) - {"tensorboard", "wandb"}:
        _fail("log_with", "one or both of 'tensorboard', 'wandb'", c.log_with)
    if c.use_score_norm and not c.use_score_scaling:
        raise ValueError("use_score_norm requires use_score_scaling")
    if not str(c.output_dir).strip():
        raise ValueError("output_dir must name a folder")


def _check_numbers(c: RunConfig) -> None:
    """Counts, rates and coefficients in their ranges."""
    for name in _AT_LEAST_ONE:
        if not _is_count(getattr(c, name), 1):
            _fail(name, "an integer >= 1", getattr(c, name))
    for name in ("gamma", "lam"):
        value = getattr(c, name)
        if not (math.isfinite(value) and 0.0 <= value <= 1.0):
            _fail(name, "in [0, 1]", value)
    for name in _POSITIVE:
        value = getattr(c, name)
        if not (math.isfinite(value) and value > 0):
            _fail(name, "a finite number > 0", value)
    for name in _NON_NEGATIVE:
        value = getattr(c, name)
        if not (math.isfinite(value) and value >= 0):
            _fail(name, "a finite number >= 0", value)
    for name in _POSITIVE_OR_NONE:
        value = getattr(c, name)
        if value is not None and not (math.isfinite(value) and value > 0):
            _fail(name, "a finite number > 0 or None", value)
    if c.eval_every < 0:
        _fail("eval_every", ">= 0 (0: never)", c.eval_every)
    if c.num_samples < 0:
        _fail("num_samples", ">= 0", c.num_samples)


def _check_generation(c: RunConfig) -> None:
    """Answer lengths: set ones at least one token, the minimum not above the maximum."""
    for name in _AT_LEAST_ONE_OR_NONE:
        value = getattr(c, name)
        if value is not None and not _is_count(value, 1):
            _fail(name, "an integer >= 1 or None", value)
    if (
        c.max_new_tokens is not None
        and c.min_new_tokens is not None
        and c.min_new_tokens > c.max_new_tokens
    ):
        raise ValueError(
            f"min_new_tokens ({c.min_new_tokens}) must not exceed max_new_tokens ({c.max_new_tokens})"
        )


def _check_chain(c: RunConfig) -> None:
    """The chain's length, one model per agent, one value per seat."""
    if not _is_count(c.num_agents, 2):
        _fail(
            "num_agents",
            "an integer >= 2 (the chain's length; a model alone is run_ppo.py)",
            c.num_agents,
        )
    if c.models is not None:
        names = [m.strip() for m in c.models.split(",")]
        if len(names) != c.num_agents or not all(names):
            raise ValueError(
                f"models must name {c.num_agents} models (one per agent, comma-separated), "
                f"got {c.models!r}"
            )
    for name, check in _SEAT_RULES:
        values = getattr(c, name)
        if values is None:
            continue
        if len(values) != c.num_agents:
            raise ValueError(
                f"{name} needs {c.num_agents} values (one per seat), got {list(values)}"
            )
        if not all(check(v) for v in values):
            raise ValueError(f"{name} has a value out of range: {list(values)}")


def _check_learners(c: RunConfig) -> None:
    """``--learners``: one registered learner per model, not together with ``--observer-learner``."""
    if c.learners is None:
        return
    if c.observer_learner is not None:
        raise ValueError("give either --learners (one per model) or --observer-learner, not both")
    names = learner_names(c)
    if len(names) != c.num_agents or not all(names):
        raise ValueError(
            f"learners must name {c.num_agents} learners (one per model, "
            f"comma-separated), got {c.learners!r}"
        )
    unknown = sorted(set(names) - set(available_learners()))
    if unknown:
        raise ValueError(f"learners: unknown {unknown}; registered: {available_learners()}")


def _check_groups(c: RunConfig) -> None:
    """The group size (at least 2 where a learner samples groups) and refill rounds."""
    grouped = sorted(n for n in set(learner_names(c)) if learner_samples_per_query(n, 2) > 1)
    low = 2 if grouped else 1
    if not _is_count(c.group_size, low):
        _fail(
            "group_size",
            f"an integer >= {low}" + (f" for the group learner {grouped[0]}" if grouped else ""),
            c.group_size,
        )
    rounds = c.refill_rounds
    if not _is_count(rounds, 0):
        _fail("refill_rounds", "an integer >= 0", rounds)
    if rounds and not (c.drop_uniform_groups and "grpo" in grouped):
        raise ValueError(
            "refill_rounds needs --drop-uniform-groups and a grpo learner: "
            "only uniform groups dropped from the loss are refilled"
        )


def _check_batches(c: RunConfig) -> None:
    """A mini-batch no larger than the trajectories of one update."""
    per_query = samples_per_query(c)
    per_update = c.batch_size * per_query
    if c.mini_batch_size > per_update:
        raise ValueError(
            f"mini_batch_size ({c.mini_batch_size}) exceeds the trajectories of one update "
            f"(batch_size {c.batch_size} x {per_query} samples per query = {per_update}); "
            "lower --mini-batch-size or raise --batch-size"
        )


def learner_names(c: RunConfig) -> list[str]:
    """Each model's learner, in model order: ``--learners``, else ``--learner`` for the first
    pioneer and ``--observer-learner`` (default: the same) for the others."""
    if c.learners is not None:
        return [name.strip() for name in c.learners.split(",")]
    return [c.learner] + [c.observer_learner or c.learner] * (c.num_agents - 1)


def samples_per_query(c: RunConfig) -> int:
    """Answers sampled per query: the most any of the run's learners asks for (each learner's
    class says whether it samples groups of ``group_size``)."""
    return max(learner_samples_per_query(name, int(c.group_size)) for name in learner_names(c))


def task_options(text: str | None) -> dict[str, object]:
    """``"a=1,b=x"`` -> ``{"a": 1, "b": "x"}``: ints, floats, ``true``/``false``, else text."""
    options: dict[str, object] = {}
    for item in filter(None, (part.strip() for part in (text or "").split(","))):
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"task_options must be key=value pairs, comma-separated, got {text!r}")
        raw = raw.strip()
        value: object = {"true": True, "false": False}.get(raw.lower(), raw)
        if isinstance(value, str):
            for kind in (int, float):
                try:
                    value = kind(raw)
                    break
                except ValueError:
                    pass
        options[key.strip()] = value
    return options
