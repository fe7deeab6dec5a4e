"""Tiny offline tokenizer and causal LM that the tests build themselves (no hub access)."""

from __future__ import annotations

import functools

from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

CORPUS = [
    "This movie was great and the acting was wonderful.",
    "I loved this film, a beautiful and moving story.",
    "The plot was boring and the ending was terrible.",
    "Question: Tom has 3 apples and buys 5 more. How many apples does he have? Answer: 8",
    "Question: A box holds 12 eggs. How many eggs are in 4 boxes? Answer: The answer is 48.",
    'I can make this sentence "this film" more positive: this film',
    "Reference: 18 #### 18 $1,234.50 -7 0.5",
    "the a an is was of and to in it that this with for on not but very good bad",
] * 4


@functools.cache
def tiny_tokenizer(vocab_size: int = 320) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained in milliseconds on a fixed corpus.

    Byte-level means any text encodes; ``<eos>`` is id 0 and doubles as padding.
    """
    return _offline().byte_level_tokenizer(CORPUS, vocab_size)


OTHER_CORPUS = [
    "A quiet evening: the rain fell on the old stone bridge.",
    "Reviews said the sequel felt slow, yet the music was lovely.",
    "Numbers 1 2 3 4 5 6 7 8 9 10 add up to 55; half of 48 is 24.",
    "Question: how many legs do 3 dogs have? Answer: 12",
    "She wrote letters every week and kept them in a blue box.",
] * 4


@functools.cache
def other_tokenizer(vocab_size: int = 290) -> PreTrainedTokenizerFast:
    """A second byte-level BPE tokenizer, trained on other text to another size: its
    vocabulary and merges differ from :func:`tiny_tokenizer`'s (``<eos>`` is id 0 too)."""
    return _offline().byte_level_tokenizer(OTHER_CORPUS, vocab_size)


def _offline():
    """``examples/offline_tokenizer.py``: the one byte-level BPE trainer the examples use too."""
    from .scripts import load_script

    return load_script("examples/offline_tokenizer.py")


def tiny_model(
    seed: int = 0, vocab_size: int | None = None, tokenizer: PreTrainedTokenizerFast | None = None
) -> LlamaForCausalLM:
    """A 2-layer Llama with random weights over ``tokenizer``'s vocabulary (default: the
    tiny tokenizer's)."""
    import torch

    torch.manual_seed(seed)
    tok = tokenizer if tokenizer is not None else tiny_tokenizer()
    cfg = LlamaConfig(
        vocab_size=vocab_size or len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        bos_token_id=None,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(cfg).eval()
