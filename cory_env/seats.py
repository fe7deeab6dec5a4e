"""The seats of a chain: their agent names, and the tokenizer each acts in.

Every seat acts in its own tokenizer's ids; what passes between seats is text (each
answer decoded by its seat's tokenizer, the next prompt encoded by the next seat's).
:func:`seat_tokenizers` resolves the env's ``tokenizer`` argument into one tokenizer per
seat: one tokenizer (object or path) for every seat, a list / tuple in chain order, or a
dict by agent name (``pioneer_0``, ``observer_0``, ... or the short names ``pioneer``,
``observer``, ``observer_1``, ...).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

__all__ = ["agent_names", "load_tokenizer", "seat_names", "seat_prefix", "seat_tokenizers"]


def agent_names(num_agents: int = 2) -> tuple[str, ...]:
    """The env's agents for a chain of ``num_agents``, in turn order: ``pioneer_0``, then
    ``observer_0``, ``observer_1``, ... Roles (seats), not models; defined here, once."""
    return ("pioneer_0", *(f"observer_{j}" for j in range(num_agents - 1)))


def seat_prefix(agent: str) -> str:
    """The short name of a role in infos and metrics: ``pioneer``, ``observer`` (the first
    observer, as in the two-agent game), then ``observer_1``, ``observer_2``, ..."""
    role, _, index = agent.rpartition("_")
    return role if index == "0" else agent


def seat_names(num_agents: int) -> dict[str, int]:
    """Every name a seat answers to (agent name and short name) -> its turn index."""
    names = agent_names(num_agents)
    return {
        **{a: i for i, a in enumerate(names)},
        **{seat_prefix(a): i for i, a in enumerate(names)},
    }


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


def seat_tokenizers(tokenizer: Any, num_agents: int) -> tuple[Any, ...]:
    """One loaded tokenizer per seat, in turn order. Entries that are the same object or the
    same path give the same object (the env is then *shared*: every seat in one vocabulary)."""
    names = agent_names(num_agents)
    if isinstance(tokenizer, Mapping):
        entries = _by_name(tokenizer, num_agents)
    elif isinstance(tokenizer, (list, tuple)):
        if len(tokenizer) != num_agents:
            raise ValueError(
                f"tokenizer= got {len(tokenizer)} tokenizers for num_agents={num_agents}: "
                f"pass one per agent in chain order ({', '.join(names)}), or one for all"
            )
        entries = list(tokenizer)
    else:
        entries = [tokenizer] * num_agents
    per_seat = isinstance(tokenizer, (Mapping, list, tuple))
    loaded: dict[Any, Any] = {}  # one load per distinct path, one entry per distinct object
    out = []
    for name, entry in zip(names, entries, strict=True):
        key = ("path", os.fspath(entry)) if isinstance(entry, (str, os.PathLike)) else id(entry)
        if key not in loaded:
            try:
                loaded[key] = load_tokenizer(entry)
            except TypeError as e:
                raise TypeError(f"{e} (the tokenizer of {name})" if per_seat else str(e)) from None
        out.append(loaded[key])
    return tuple(out)


def _by_name(tokenizers: Mapping[Any, Any], num_agents: int) -> list[Any]:
    """A dict of tokenizers by seat name, in turn order; every seat named exactly once."""
    names = agent_names(num_agents)
    index = seat_names(num_agents)
    unknown = [k for k in tokenizers if k not in index]
    if unknown:
        valid = ", ".join(repr(n) for n in index)
        raise ValueError(
            f"tokenizer= has unknown agents {unknown}: this env's agents are named {valid}"
        )
    seats: dict[int, list[Any]] = {}
    for key in tokenizers:
        seats.setdefault(index[key], []).append(key)
    twice = [keys for keys in seats.values() if len(keys) > 1]
    if twice:
        raise ValueError(f"tokenizer= names one agent twice: {twice[0]}; give each agent once")
    missing = [n for i, n in enumerate(names) if i not in seats]
    if missing:
        raise ValueError(
            f"tokenizer= has no tokenizer for {missing}: give one for every agent ({', '.join(names)})"
        )
    return [tokenizers[seats[i][0]] for i in range(num_agents)]
