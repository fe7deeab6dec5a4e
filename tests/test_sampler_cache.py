"""KVCacheSampler on transformers' cache API: the tokens and logits of a full forward over the
growing sequence, and no deprecation warning on either channel transformers uses
(``warnings`` and its logger's ``warning_once``)."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from helpers.tiny import tiny_model, tiny_tokenizer
from transformers.utils import logging as hf_logging

from agents.policy import KVCacheSampler, LLMAgent, sample_tokens
from agents.policy.sampler import CACHE_KWARG
from cory_env import GenerationConfig

PROMPTS = [np.array([5, 17, 42, 9, 3]), np.array([8, 2]), np.array([30, 31, 32])]
STEPS = 7
BUDGET = 3  # under STEPS: the attention mask grows mid-decode


def make_agent(kind: str) -> LLMAgent:
    tok = tiny_tokenizer()
    if kind == "lora":
        return LLMAgent.lora(tiny_model(), tok, r=4, alpha=8)
    return LLMAgent.full_copy(tiny_model(), tok)


def cached_decode(agent: LLMAgent, generation: GenerationConfig, seed: int):
    """``(tokens (STEPS, B), logits (STEPS, B, V))`` from the sampler."""
    generator = torch.Generator().manual_seed(seed)
    tokens, logits = [], []
    with KVCacheSampler.open(agent, PROMPTS, BUDGET) as sampler:
        for step in range(STEPS):
            logits.append(sampler.logits.clone())
            tokens.append(sample_tokens(sampler.logits, generation, generator))
            if step + 1 < STEPS:
                sampler.advance(tokens[-1])
    return torch.stack(tokens), torch.stack(logits)


def full_decode(agent: LLMAgent, generation: GenerationConfig, seed: int):
    """The same as :func:`cached_decode` with no cache: every step re-encodes each left-padded
    sequence in full."""
    generator = torch.Generator().manual_seed(seed)
    seqs = [p.tolist() for p in PROMPTS]
    tokens, logits = [], []
    with torch.no_grad(), agent.policy(training=False) as model:
        for _ in range(STEPS):
            width = max(map(len, seqs))
            ids = torch.tensor([[agent.pad_id] * (width - len(s)) + s for s in seqs])
            mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs])
            pos = (mask.cumsum(1) - 1).clamp(min=0)
            last = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits[:, -1]
            logits.append(last)
            tokens.append(sample_tokens(last, generation, generator))
            for s, t in zip(seqs, tokens[-1].tolist()):
                s.append(t)
    return torch.stack(tokens), torch.stack(logits)


@pytest.mark.parametrize("kind", ["full", "lora"])
@pytest.mark.parametrize(
    "generation",
    [GenerationConfig(top_k=1), GenerationConfig(temperature=0.8, top_k=40, top_p=0.95)],
    ids=["greedy", "sampled"],
)
def test_cached_decode_equals_full_forward(kind, generation):
    agent = make_agent(kind)
    fast_tokens, fast_logits = cached_decode(agent, generation, seed=7)
    slow_tokens, slow_logits = full_decode(agent, generation, seed=7)
    assert fast_tokens.tolist() == slow_tokens.tolist()
    torch.testing.assert_close(fast_logits, slow_logits, rtol=1e-4, atol=1e-5)
    if generation.top_k != 1:  # the sampled case does sample: not every token is the argmax
        assert (fast_tokens != fast_logits.argmax(-1)).any()


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def transformers_channels() -> Iterator[tuple[list[warnings.WarningMessage], list[str]]]:
    """Every warning raised and every transformers log record at WARNING or above, inside the
    block. ``warning_once``'s memory is cleared first, so a message an earlier test already
    logged in this process is logged again."""
    hf_logging.warning_once.cache_clear()
    handler = _Records()
    logger = logging.getLogger("transformers")
    logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield caught, handler.messages
    finally:
        logger.removeHandler(handler)


@pytest.mark.parametrize("kind", ["full", "lora"])
def test_sampler_emits_no_warning(kind):
    agent = make_agent(kind)
    with transformers_channels() as (caught, logged):
        cached_decode(agent, GenerationConfig(top_k=1), seed=0)
    assert [str(w.message) for w in caught] == []
    assert logged == []


@pytest.mark.skipif(CACHE_KWARG != "cache", reason="transformers before 5.24 has no `cache`")
def test_channels_catch_the_deprecated_cache_keyword():
    """The capture sees transformers' deprecation of ``past_key_values`` on both channels: a
    FutureWarning from the forward's keyword check and a logger line from the output's alias."""
    model = tiny_model()
    ids = torch.tensor([[5, 17, 42]])
    with transformers_channels() as (caught, logged), torch.no_grad():
        out = model(input_ids=ids, use_cache=True)
        out = model(input_ids=ids[:, -1:], past_key_values=out.cache, use_cache=True)
        _ = out.past_key_values
    assert any(
        w.category is FutureWarning and "`past_key_values` is deprecated" in str(w.message)
        for w in caught
    )
    assert any("past_key_values" in m and "deprecated" in m for m in logged)
