"""A byte-level BPE tokenizer trained offline in milliseconds, for the examples (any Hugging
Face tokenizer works in its place: ``--tokenizer gpt2``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def byte_level_tokenizer(corpus: Sequence[str], vocab_size: int = 320) -> Any:
    """A byte-level BPE tokenizer trained offline in milliseconds; ``<eos>`` is id 0 and pads."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<eos>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(corpus), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<eos>")
