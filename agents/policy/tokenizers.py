"""Each model's tokenizer, checked before any model's weights load: models whose
tokenizers match share one tokenizer object (so the env sees one vocabulary for them), and
models whose tokenizers differ each act in their own (the env hands text between them)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["per_model_tokenizers", "same_tokenizer", "tokenizer_differences"]

_SPECIAL = ("eos_token_id", "pad_token_id", "bos_token_id", "unk_token_id")


def tokenizer_differences(a: Any, b: Any) -> list[str]:
    """What differs between tokenizers ``a`` and ``b`` (vocabulary size, the token -> id
    map, special ids); empty when they tokenize alike."""
    if a is b:
        return []
    diffs = []
    if len(a) != len(b):
        diffs.append(f"vocabulary size {len(a)} vs {len(b)}")
    else:
        va, vb = a.get_vocab(), b.get_vocab()
        if va != vb:
            moved = sorted(t for t in va if vb.get(t) != va[t])
            diffs.append(f"{len(moved)} tokens map to other ids (e.g. {moved[0]!r})")
    for attr in _SPECIAL:
        x, y = getattr(a, attr, None), getattr(b, attr, None)
        if x != y:
            diffs.append(f"{attr} {x} vs {y}")
    return diffs


def same_tokenizer(a: Any, b: Any) -> bool:
    """Whether ``a`` and ``b`` give the same ids for the same text, specials included."""
    return not tokenizer_differences(a, b)


def per_model_tokenizers(named: Sequence[tuple[str, Any]]) -> list[Any]:
    """One tokenizer per ``(model name, tokenizer)``: the first of those it matches
    (:func:`same_tokenizer`), else its own. A tokenizer with neither an EOS nor a pad token
    is refused, naming its model (a turn could not end, a batch could not be padded)."""
    kept: list[Any] = []
    out = []
    for name, tok in named:
        if (
            getattr(tok, "eos_token_id", None) is None
            and getattr(tok, "pad_token_id", None) is None
        ):
            raise ValueError(
                f"the tokenizer of {name!r} has neither an EOS nor a pad token: give the "
                "model a tokenizer with an EOS token (its turns end there)"
            )
        match = next((k for k in kept if same_tokenizer(k, tok)), None)
        if match is None:
            kept.append(tok)
        out.append(match if match is not None else tok)
    return out
