"""The env's configuration: its keyword arguments resolved and validated once, at
construction (the task and its defaults, each seat's tokenizer, lengths, the reward mode)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cory_env import rewards
from cory_env.seats import agent_names, load_tokenizer, seat_tokenizers
from cory_env.tasks.base import Task, make_task

__all__ = [
    "EnvConfig",
    "load_tokenizer",
    "make_config",
    "positive_int",
    "seat_tokenizers",
    "setup_env",
]


@dataclass(frozen=True)
class EnvConfig:
    """Everything an episode needs, resolved and validated once at construction.

    ``tokenizer``, ``vocab_size``, ``pad_token_id`` and ``eos_token_id`` are the pioneer's;
    ``tokenizers``, ``vocab_sizes``, ``pad_ids`` and ``eos_ids`` hold every seat's, indexed
    by turn index (left empty, they are the pioneer's for every seat)."""

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
    tokenizers: tuple[Any, ...] = ()
    """Each seat's tokenizer, in turn order."""
    vocab_sizes: tuple[int, ...] = ()
    """Each seat's vocabulary size ``len(tokenizer)``: its actions are ``[0, size)``."""
    pad_ids: tuple[int, ...] = ()
    """Each seat's pad id (its tokenizer's pad token, else its EOS)."""
    eos_ids: tuple[int | None, ...] = ()
    """Each seat's EOS id (None: its turns end by length or stop string only)."""

    def __post_init__(self) -> None:
        k = self.num_agents
        for name, value in (
            ("tokenizers", self.tokenizer),
            ("vocab_sizes", self.vocab_size),
            ("pad_ids", self.pad_token_id),
            ("eos_ids", self.eos_token_id),
        ):
            if not getattr(self, name):
                object.__setattr__(self, name, (value,) * k)
            elif len(getattr(self, name)) != k:
                raise ValueError(f"EnvConfig.{name} needs {k} entries (one per seat)")

    @property
    def shared(self) -> bool:
        """Every seat acts in the same tokenizer (one object)."""
        return all(t is self.tokenizers[0] for t in self.tokenizers)

    @property
    def seq_len(self) -> int:
        """The length ``L`` of every observation."""
        return self.max_prompt_tokens + self.max_new_tokens

    @property
    def stop_strings(self) -> tuple[str, ...]:
        return tuple(self.task.generation.stop_strings)


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
    num_agents = positive_int(num_agents, "num_agents")
    tokenizers = seat_tokenizers(tokenizer, num_agents)
    task_obj = make_task(task, **(task_kwargs or {}))
    if reward_fn is not None:
        task_obj = task_obj.with_reward(rewards.make_reward(reward_fn))
    task_obj.queries(split)  # validates the split name
    gen = task_obj.generation
    names = agent_names(num_agents)
    pads, eoses = zip(
        *(_pad_and_eos(t, n, tokenizers) for t, n in zip(tokenizers, names, strict=True)),
        strict=True,
    )
    return EnvConfig(
        task=task_obj,
        tokenizer=tokenizers[0],
        vocab_size=len(tokenizers[0]),
        pad_token_id=pads[0],
        eos_token_id=eoses[0],
        tokenizers=tokenizers,
        vocab_sizes=tuple(len(t) for t in tokenizers),
        pad_ids=pads,
        eos_ids=eoses,
        max_new_tokens=positive_int(
            gen.max_new_tokens if max_new_tokens is None else max_new_tokens, "max_new_tokens"
        ),
        max_prompt_tokens=positive_int(
            gen.max_prompt_tokens if max_prompt_tokens is None else max_prompt_tokens,
            "max_prompt_tokens",
        ),
        reward_mode=rewards.check_mode(reward_mode),
        split=split,
        num_agents=num_agents,
        info_texts=bool(info_texts),
    )


def _pad_and_eos(tokenizer: Any, name: str, tokenizers: tuple[Any, ...]) -> tuple[int, int | None]:
    """A seat's pad id (its tokenizer's pad token, else its EOS) and its EOS id."""
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    if pad is None:
        whose = "the tokenizer" if len(set(map(id, tokenizers))) == 1 else f"{name}'s tokenizer"
        raise ValueError(f"{whose} has neither a pad token nor an EOS token to pad with")
    return int(pad), None if eos is None else int(eos)


def setup_env(env: Any, render_mode: str | None = None, **config: Any) -> None:
    """What the constructors of :class:`cory_env.env.CoryTextEnv` and
    :class:`cory_env.vector.CoryTextVecEnv` share: check ``render_mode`` against
    ``env.metadata``, resolve ``config`` (:func:`make_config`'s arguments) into
    ``env.config``, and set ``env.task``, ``env.tokenizer`` (the pioneer's),
    ``env.tokenizers`` (``{agent name: tokenizer}``) and ``env.render_mode``."""
    if render_mode not in (None, *env.metadata["render_modes"]):
        modes = ", ".join(repr(m) for m in env.metadata["render_modes"])
        raise ValueError(f"render_mode must be None or one of {modes}, got {render_mode!r}")
    env.config = make_config(**config)
    env.task, env.tokenizer = env.config.task, env.config.tokenizer
    names = agent_names(env.config.num_agents)
    env.tokenizers = dict(zip(names, env.config.tokenizers, strict=True))
    env.render_mode = render_mode
