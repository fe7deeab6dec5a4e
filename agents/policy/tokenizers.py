"""Agents that read each other's answers must share a tokenizer: the check, run before any
model's weights load."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["check_same_tokenizer"]

_SPECIAL = ("eos_token_id", "pad_token_id", "bos_token_id", "unk_token_id")


def check_same_tokenizer(named: Sequence[tuple[str, Any]]) -> None:
    """Raise ``ValueError`` naming both tokenizers and what differs (vocabulary size, the
    token -> id map, special ids) unless every ``(name, tokenizer)`` matches the first."""
    first_name, first = named[0]
    first_vocab = first.get_vocab()
    for name, tok in named[1:]:
        diffs = []
        if len(tok) != len(first):
            diffs.append(f"vocabulary size {len(first)} vs {len(tok)}")
        elif tok.get_vocab() != first_vocab:
            vocab = tok.get_vocab()
            moved = sorted(t for t in first_vocab if vocab.get(t) != first_vocab[t])
            diffs.append(f"{len(moved)} tokens map to other ids (e.g. {moved[0]!r})")
        for attr in _SPECIAL:
            a, b = getattr(first, attr, None), getattr(tok, attr, None)
            if a != b:
                diffs.append(f"{attr} {a} vs {b}")
        if diffs:
            raise ValueError(
                f"the agents' models must share a tokenizer (each reads the others' answers as "
                f"token ids): {first_name!r} and {name!r} differ: {'; '.join(diffs)}"
            )
