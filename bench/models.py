"""The benches' models: the tests' ``tiny`` model, any id/alias/folder, or ``random:<shape>``
— a model of that shape with random weights built from its config (offline: no download;
GPU machines are often offline), over the embedded SmolLM2 tokenizer (or ``--tokenizer``, a
saved tokenizer folder, a few MB, that travels with the working tree). Random weights make
the answers' lengths the benches fix (``min_new_tokens = max_new_tokens``) the only ones.

    python bench/iteration.py --model random:gpt2-large --device cuda
"""

from __future__ import annotations

from typing import Any

import torch

# fmt: off
SHAPES: dict[str, tuple[str, dict[str, Any]]] = {
    "gpt2-large": ("gpt2", dict(n_embd=1280, n_layer=36, n_head=20, n_positions=1024)),
    "gpt2-xl": ("gpt2", dict(n_embd=1600, n_layer=48, n_head=25, n_positions=1024)),
    "smollm2-135m": ("llama", dict(hidden_size=576, num_hidden_layers=30, num_attention_heads=9,
                                   num_key_value_heads=3, intermediate_size=1536, tie_word_embeddings=True)),
    "llama-1b": ("llama", dict(hidden_size=2048, num_hidden_layers=16, num_attention_heads=32,
                               num_key_value_heads=8, intermediate_size=8192, tie_word_embeddings=True)),
    "llama-7b": ("llama", dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32,
                               num_key_value_heads=32, intermediate_size=11008)),
}
"""``random:<name>`` shapes: GPT-2 large / XL (the paper's IMDB models), SmolLM2-135M's,
a 1B and a 7B Llama (the paper's GSM8K model's)."""
# fmt: on


def random_model(
    shape: str, vocab_size: int, dtype: str = "fp32", seed: int = 0
) -> torch.nn.Module:
    """A causal LM of ``shape`` (:data:`SHAPES`) with random weights and ``vocab_size`` tokens."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from agents.policy.loading import TORCH_DTYPES

    if shape not in SHAPES:
        raise SystemExit(f"unknown random model shape {shape!r}; known: {', '.join(SHAPES)}")
    kind, kwargs = SHAPES[shape]
    config = AutoConfig.for_model(kind, vocab_size=vocab_size, **kwargs)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config, dtype=TORCH_DTYPES[dtype]).eval()


def load_bench_model(
    name: str, device: str = "cpu", dtype: str = "fp32", tokenizer: str | None = None
):
    """``(model, tokenizer)`` for a bench: ``tiny``, ``random:<shape>``, or a real model."""
    if name == "tiny":
        from tests.helpers.tiny import tiny_model, tiny_tokenizer

        return tiny_model().to(device), tiny_tokenizer()
    if name.startswith("random:"):
        from agents.policy.loading import ensure_pad_token, load_tokenizer

        tok = load_tokenizer(tokenizer or "smollm2-135m-instruct")
        model = random_model(name.split(":", 1)[1], len(tok), dtype).to(device)
        ensure_pad_token(tok, model)
        return model, tok
    from agents.policy.loading import load_model

    return load_model(name, dtype=dtype, device=device)
