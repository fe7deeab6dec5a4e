"""Sampling from a policy with a KV cache: one prefill over the left-padded prompts, then
one cached forward per token. The sampler knows nothing of the env: the rollout
(:func:`agents.run.rollout.play_turn`) feeds it the tokens and steps the env.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from transformers.modeling_outputs import CausalLMOutputWithPast

from agents.errors import DivergedError
from agents.policy.agent import keep_positions
from agents.policy.construction import hf_model
from agents.policy.lora_calls import replaced_forwards

__all__ = ["KVCacheSampler", "exponential_race", "sample_tokens"]

#: The name of the KV cache in a causal LM's forward keywords and outputs: ``cache`` in
#: transformers releases that define it (``past_key_values`` there is a deprecated alias that
#: warns on every use), ``past_key_values`` in the 5.x releases before 5.24.
CACHE_KWARG = (
    "cache"
    if "cache" in {f.name for f in dataclasses.fields(CausalLMOutputWithPast)}
    else "past_key_values"
)


def sample_tokens(
    logits: torch.Tensor, generation: Any, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``(B,)`` token ids drawn from ``(B, V)`` logits with the temperature / top-k / top-p of
    ``generation`` (as Hugging Face's warpers, in that order). ``top_k=1`` or a temperature
    of 0 is greedy."""
    temperature = float(getattr(generation, "temperature", 1.0))
    top_k = int(getattr(generation, "top_k", 0) or 0)
    top_p = float(getattr(generation, "top_p", 1.0))
    logits = logits.float()
    if top_k == 1 or temperature <= 0:
        return logits.argmax(-1)
    if temperature != 1.0:
        logits = logits / temperature
    if 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1)
        drop = sorted_logits.softmax(-1).cumsum(-1) <= 1.0 - top_p
        drop[:, -1] = False  # always keep the most likely token
        logits = logits.scatter(1, order, sorted_logits.masked_fill(drop, float("-inf")))
    probs = logits.softmax(-1)
    if (
        generator is not None and generator.device != probs.device
    ):  # e.g. a CPU generator, CUDA model
        return _draw(probs.to(generator.device), generator).to(probs.device)
    return _draw(probs, generator)


def _draw(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """``torch.multinomial(probs, 1, generator=generator)`` as ``(B,)``: on the CPU through
    :func:`exponential_race` where it gives the same tokens (:func:`race_matches`)."""
    if probs.device.type == "cpu" and probs.dtype == torch.float32 and race_matches():
        if not bool(torch.isfinite(probs.sum(-1)).all()):
            raise DivergedError(DIVERGED)
        return exponential_race(probs, generator)
    try:
        return torch.multinomial(probs, 1, generator=generator).squeeze(1)
    except RuntimeError as err:
        if bool(torch.isfinite(probs).all()):
            raise
        raise DivergedError(DIVERGED) from err


DIVERGED = (
    "the policy's next-token probabilities hold NaN or inf: its weights have diverged "
    "(a learning rate too high, or an overflow); resume from an older checkpoint with "
    "a lower --learning-rate"
)


def exponential_race(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """``argmax(probs / q)`` with ``q ~ Exp(1)``: torch's own draw for one sample of
    ``torch.multinomial`` (its exponential noise, from the generator's double uniforms),
    with the noise made from ``-log1p(-u)`` on whole tensors, where the CPU's exponential
    kernel computes it one element at a time: the same tokens in half the time at a 49k
    vocabulary. The global random state is used only where ``generator`` is None."""
    u = torch.empty(probs.shape, dtype=torch.float64, device=probs.device)
    q = u.uniform_(generator=generator).neg_().log1p_().neg_().to(probs.dtype)
    return (probs / q).argmax(-1)


@functools.cache
def race_matches() -> bool:
    """Whether :func:`exponential_race` draws what ``torch.multinomial`` draws in this torch
    (the same tokens and the same generator state after), checked once on random rows."""
    probs = torch.rand(8, 4099, generator=torch.Generator().manual_seed(0)).softmax(-1)
    a, b = torch.Generator().manual_seed(11), torch.Generator().manual_seed(11)
    for _ in range(3):
        if not torch.equal(
            torch.multinomial(probs, 1, generator=a).squeeze(1), exponential_race(probs, b)
        ):
            return False
    return torch.equal(torch.rand(4, generator=a), torch.rand(4, generator=b))


@contextlib.contextmanager
def _head_as_rows(model: torch.nn.Module) -> Iterator[None]:
    """In the block, a bias-free linear output head computes ``(W h^T)^T``: on a CPU, a few
    rows against a large vocabulary run faster that way round (a third off at 16 rows and
    49k tokens) than as ``h W^T``. fp32 heads outside autocast only."""
    head = hf_model(model).get_output_embeddings()
    if (
        type(head) is not torch.nn.Linear
        or head.bias is not None
        or head.weight.dtype != torch.float32
        or head.weight.device.type != "cpu"
        or torch.is_autocast_enabled("cpu")
    ):
        yield
        return
    weight = head.weight

    def forward(h: torch.Tensor) -> torch.Tensor:
        rows = torch.mm(weight, h.reshape(-1, h.shape[-1]).t()).t().contiguous()
        return rows.view(*h.shape[:-1], weight.shape[0])

    with replaced_forwards([head], lambda _: forward):
        yield


class KVCacheSampler:
    """Incremental decoding of ``B`` prompts under an agent's policy (no grad, eval mode).

    Use :meth:`open`: ``with KVCacheSampler.open(agent, prompts, budget) as s:`` then read
    :attr:`logits` ``(B, V)`` (the next token's), and :meth:`advance` with the ``(B,)``
    tokens chosen. ``budget`` sizes the attention mask up front (it grows if exceeded).
    """

    def __init__(
        self, agent: Any, model: torch.nn.Module, prompts: Sequence[np.ndarray], budget: int
    ) -> None:
        prompts = [np.asarray(p, dtype=np.int64) for p in prompts]
        if any(len(p) == 0 for p in prompts):
            raise ValueError("every prompt needs at least one token")
        self.model, self.device = model, agent.device
        b, p_len = len(prompts), max(len(p) for p in prompts)
        ids = np.full((b, p_len), agent.pad_id, dtype=np.int64)
        mask = torch.zeros((b, p_len + budget), dtype=torch.int64)
        for i, p in enumerate(prompts):
            ids[i, p_len - len(p) :] = p
            mask[i, p_len - len(p) : p_len] = 1
        self.lengths = torch.tensor(
            [len(p) for p in prompts], dtype=torch.int64, device=self.device
        )
        positions = (mask[:, :p_len].cumsum(1) - 1).clamp(min=0).to(self.device)
        self.mask = mask.to(self.device)
        self.p_len, self.step = p_len, 0
        keep = (
            {"logits_to_keep": keep_positions(1, p_len, self.device)} if agent.keeps_logits else {}
        )
        out = model(
            input_ids=torch.from_numpy(ids).to(self.device),
            attention_mask=self.mask[:, :p_len],
            position_ids=positions,
            use_cache=True,  # the model builds its cache (a DynamicCache) and returns it
            **keep,
        )
        self.cache, self.logits = getattr(out, CACHE_KWARG), out.logits[:, -1]

    @classmethod
    @contextlib.contextmanager
    def open(
        cls, agent: Any, prompts: Sequence[np.ndarray], budget: int
    ) -> Iterator[KVCacheSampler]:
        """A sampler over ``agent.policy(training=False, sampling=True)`` (its LoRA layers
        merged) for the ``with`` block."""
        with (
            torch.no_grad(),
            agent.policy(training=False, sampling=True) as model,
            _head_as_rows(model),
        ):
            yield cls(agent, model, prompts, budget)

    def advance(self, tokens: torch.Tensor) -> None:
        """Append ``tokens`` ``(B,)`` to every sequence; :attr:`logits` becomes the next token's."""
        self.step += 1
        p_len, step = self.p_len, self.step
        if p_len + step > self.mask.shape[1]:
            self.mask = torch.cat([self.mask, torch.zeros_like(self.mask)], dim=1)
        self.mask[:, p_len + step - 1] = 1
        out = self.model(
            input_ids=tokens.unsqueeze(1),
            attention_mask=self.mask[:, : p_len + step],
            position_ids=(self.lengths + step - 1).unsqueeze(1),
            use_cache=True,
            **{CACHE_KWARG: self.cache},
        )
        self.cache, self.logits = getattr(out, CACHE_KWARG), out.logits[:, -1]
