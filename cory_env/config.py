"""The env's configuration: its keyword arguments resolved and validated once, at
construction (the task and its defaults, the tokenizer, lengths, the reward mode)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from cory_env import rewards
from cory_env.tasks.base import Task, make_task

__all__ = ["EnvConfig", "load_tokenizer", "make_config", "positive_int", "setup_env"]


@dataclass(frozen=True)
class EnvConfig:
    """Everything an episode needs, resolved and validated once at construction."""

    task: Task
    tokenizer: Any
    vocab_size: int
    pad_token_id: int
    eos_token_id: int | None
    max_new_tokens: int
    max_prompt_tokens: int
    reward_mode: str
    split: str
    num_agents: int = 2
    """The chain's length K, the pioneer and K - 1 observers."""
    info_texts: bool = False
    """Infos also hold the query and the texts (strings); by default numbers only."""

    @property
    def seq_len(self) -> int:
        """The length ``L`` of every observation."""
        return self.max_prompt_tokens + self.max_new_tokens

    @property
    def stop_strings(self) -> tuple[str, ...]:
        return tuple(self.task.generation.stop_strings)


def load_tokenizer(tokenizer: Any) -> Any:
    """A Hugging Face tokenizer object, or one loaded from a path / hub id."""
    if tokenizer is None:
        raise TypeError(
            "a tokenizer is required: pass tokenizer=<a Hugging Face tokenizer> "
            "or tokenizer='<local path or hub id>' (e.g. the policy model's tokenizer)"
        )
    if isinstance(tokenizer, (str, os.PathLike)):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(tokenizer))
    if not (
        callable(tokenizer) and hasattr(tokenizer, "batch_decode") and hasattr(tokenizer, "__len__")
    ):
        raise TypeError(
            f"tokenizer must be a Hugging Face tokenizer or a path/hub id, got {type(tokenizer).__name__}"
        )
    return tokenizer


def positive_int(value: Any, name: str) -> int:
    """``value`` as an int >= 1, or a clear error naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be a positive int, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


def make_config(
    *,
    task: str | Task,
    tokenizer: Any,
    max_new_tokens: int | None,
    reward_mode: str,
    reward_fn: Any,
    max_prompt_tokens: int | None,
    split: str,
    task_kwargs: dict[str, Any] | None,
    num_agents: int,
    info_texts: bool,
) -> EnvConfig:
    """Resolve the env's keyword arguments into an :class:`EnvConfig`; lengths left at None
    come from the task's generation defaults. The arguments' own defaults are those of
    :class:`cory_env.env.CoryTextEnv`, the one signature that states them."""
    tokenizer = load_tokenizer(tokenizer)
    task_obj = make_task(task, **(task_kwargs or {}))
    if reward_fn is not None:
        task_obj = task_obj.with_reward(rewards.make_reward(reward_fn))
    task_obj.queries(split)  # validates the split name
    gen = task_obj.generation
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    if pad is None:
        raise ValueError("the tokenizer has neither a pad token nor an EOS token to pad with")
    return EnvConfig(
        task=task_obj,
        tokenizer=tokenizer,
        vocab_size=len(tokenizer),
        pad_token_id=int(pad),
        eos_token_id=None if eos is None else int(eos),
        max_new_tokens=positive_int(
            gen.max_new_tokens if max_new_tokens is None else max_new_tokens, "max_new_tokens"
        ),
        max_prompt_tokens=positive_int(
            gen.max_prompt_tokens if max_prompt_tokens is None else max_prompt_tokens,
            "max_prompt_tokens",
        ),
        reward_mode=rewards.check_mode(reward_mode),
        split=split,
        num_agents=positive_int(num_agents, "num_agents"),
        info_texts=bool(info_texts),
    )


def setup_env(env: Any, render_mode: str | None = None, **config: Any) -> None:
    """What the constructors of :class:`cory_env.env.CoryTextEnv` and
    :class:`cory_env.vector.CoryTextVecEnv` share: check ``render_mode`` against
    ``env.metadata``, resolve ``config`` (:func:`make_config`'s arguments) into
    ``env.config``, and set ``env.task``, ``env.tokenizer`` and ``env.render_mode``."""
    if render_mode not in (None, *env.metadata["render_modes"]):
        modes = ", ".join(repr(m) for m in env.metadata["render_modes"])
        raise ValueError(f"render_mode must be None or one of {modes}, got {render_mode!r}")
    env.config = make_config(**config)
    env.task, env.tokenizer = env.config.task, env.config.tokenizer
    env.render_mode = render_mode
