"""Validation of a run's config, field by field, at construction (so at parse time): every
value out of its range is refused with the field's name, before anything loads."""

from __future__ import annotations

import math
from dataclasses import fields
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agents.run.config import TrainConfig

__all__ = ["check_config", "check_group_options", "learner_names", "samples_per_query", "task_options"]


def _fail(name: str, rule: str, value) -> None:
    raise ValueError(f"{name} must be {rule}, got {value!r}")


def check_config(c: TrainConfig) -> None:
    """Refuse any field out of its range, naming it: the run's fields, then the GRPO
    family's (:func:`check_group_options`)."""
    _check_run(c)
    check_group_options(c)


def _check_run(c: TrainConfig) -> None:
    task_options(c.task_options)
    if c.load_in_4bit and c.mode != "lora":
        raise ValueError("load_in_4bit trains LoRA adapters on a frozen 4-bit base: it needs --mode lora")
    if not c.log_with or set(c.log_with) - {"tensorboard", "wandb"}:
        _fail("log_with", "one or both of 'tensorboard', 'wandb'", c.log_with)
    for name in ("iterations", "batch_size", "mini_batch_size", "ppo_epochs", "swap_period",
                 "gradient_accumulation_steps", "group_size", "eval_size", "checkpoint_every",
                 "lora_r", "lora_alpha", "keep_checkpoints", "max_nonfinite_steps"):
        value = getattr(c, name, 1)
        if isinstance(value, bool) or int(value) != value or value < 1:
            _fail(name, "an integer >= 1", value)
    for name, low, high in (("gamma", 0.0, 1.0), ("lam", 0.0, 1.0)):
        value = getattr(c, name)
        if not (math.isfinite(value) and low <= value <= high):
            _fail(name, f"in [{low:g}, {high:g}]", value)
    for name in ("learning_rate", "cliprange", "cliprange_value", "target", "horizon",
                 "ratio_threshold"):
        value = getattr(c, name)
        if not (math.isfinite(value) and value > 0):
            _fail(name, "a finite number > 0", value)
    for name in ("init_kl_coef", "vf_coef"):
        value = getattr(c, name)
        if not (math.isfinite(value) and value >= 0):
            _fail(name, "a finite number >= 0", value)
    for name in ("max_grad_norm", "target_kl", "score_clip"):
        value = getattr(c, name)
        if value is not None and not (math.isfinite(value) and value > 0):
            _fail(name, "a finite number > 0 or None", value)
    for name in ("max_new_tokens", "min_new_tokens", "max_tokens_per_microbatch"):
        value = getattr(c, name)
        if value is not None and (isinstance(value, bool) or int(value) != value or value < 1):
            _fail(name, "an integer >= 1 or None", value)
    if c.max_new_tokens is not None and c.min_new_tokens is not None and c.min_new_tokens > c.max_new_tokens:
        raise ValueError(f"min_new_tokens ({c.min_new_tokens}) must not exceed max_new_tokens ({c.max_new_tokens})")
    if c.eval_every < 0:
        _fail("eval_every", ">= 0 (0: never)", c.eval_every)
    if c.num_samples < 0:
        _fail("num_samples", ">= 0", c.num_samples)
    if c.use_score_norm and not c.use_score_scaling:
        raise ValueError("use_score_norm requires use_score_scaling")
    if isinstance(c.num_agents, bool) or int(c.num_agents) != c.num_agents or c.num_agents < 2:
        _fail("num_agents", "an integer >= 2 (the chain's length; a model alone is run_ppo.py)", c.num_agents)
    if c.models is not None:
        names = [m.strip() for m in c.models.split(",")]
        if len(names) != c.num_agents or not all(names):
            raise ValueError(f"models must name {c.num_agents} models (one per agent, comma-separated), "
                             f"got {c.models!r}")
    for name, check in (("seat_max_new_tokens", lambda v: int(v) == v and v >= 1),
                        ("seat_temperature", lambda v: math.isfinite(v) and v >= 0),
                        ("seat_top_k", lambda v: int(v) == v and v >= 0),
                        ("seat_top_p", lambda v: math.isfinite(v) and 0 < v <= 1)):
        values = getattr(c, name)
        if values is None:
            continue
        if len(values) != c.num_agents:
            raise ValueError(f"{name} needs {c.num_agents} values (one per seat), got {list(values)}")
        if not all(check(v) for v in values):
            raise ValueError(f"{name} has a value out of range: {list(values)}")
    if not str(c.output_dir).strip():
        raise ValueError("output_dir must name a folder")
    per_update = c.batch_size * samples_per_query(c)
    if c.mini_batch_size > per_update:
        raise ValueError(
            f"mini_batch_size ({c.mini_batch_size}) exceeds the trajectories of one update "
            f"(batch_size {c.batch_size} x {samples_per_query(c)} samples per query = {per_update}); "
            "lower --mini-batch-size or raise --batch-size"
        )


def learner_names(c: TrainConfig) -> list[str]:
    """Each model's learner, in model order: ``--learners``, else ``--learner`` for the first
    pioneer and ``--observer-learner`` (default: the same) for the others."""
    if c.learners is not None:
        return [name.strip() for name in c.learners.split(",")]
    return [c.learner] + [c.observer_learner or c.learner] * (c.num_agents - 1)


def samples_per_query(c: TrainConfig) -> int:
    """Answers sampled per query: the group size when a group-based learner plays."""
    learners = set(learner_names(c))
    if learners <= {"ppo"}:
        return 1
    return int(c.group_size)


def check_group_options(c: TrainConfig) -> None:
    """Refuse GRPO-family settings out of range, naming the field (the learner's own
    rules, :class:`agents.rl.grpo.GRPOOptions`, plus the group size and refill rounds)."""
    from agents.rl.grpo import GRPOOptions

    GRPOOptions(**{f.name: getattr(c, f.name) for f in fields(GRPOOptions)})
    from agents.rl.learner import available_learners

    names = learner_names(c)
    if c.learners is not None:
        if c.observer_learner is not None:
            raise ValueError("give either --learners (one per model) or --observer-learner, not both")
        if len(names) != c.num_agents or not all(names):
            raise ValueError(f"learners must name {c.num_agents} learners (one per model, "
                             f"comma-separated), got {c.learners!r}")
        unknown = sorted(set(names) - set(available_learners()))
        if unknown:
            raise ValueError(f"learners: unknown {unknown}; registered: {available_learners()}")
    grouped = set(names) & {"grpo", "rloo"}
    size = c.group_size
    if isinstance(size, bool) or int(size) != size or size < (2 if grouped else 1):
        _fail("group_size", f"an integer >= {2 if grouped else 1}" + (
            f" for the group learner {sorted(grouped)[0]}" if grouped else ""), size)
    rounds = c.refill_rounds
    if isinstance(rounds, bool) or int(rounds) != rounds or rounds < 0:
        _fail("refill_rounds", "an integer >= 0", rounds)
    if rounds and not (c.drop_uniform_groups and "grpo" in grouped):
        raise ValueError("refill_rounds needs --drop-uniform-groups and a grpo learner: "
                         "only uniform groups dropped from the loss are refilled")


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
