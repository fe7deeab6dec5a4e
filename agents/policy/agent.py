"""``LLMAgent``: a causal LM policy plus a scalar value head, as CORY's learners see it.

Two ways to hold the weights (built in :mod:`agents.policy.construction`):

- :meth:`LLMAgent.full_copy` (the paper's setting): the agent trains a full copy of the
  model; the reference is a frozen deep copy, or one frozen model shared by several agents.
- :meth:`LLMAgent.lora_agents` / :meth:`LLMAgent.lora_pair` / :meth:`LLMAgent.lora`: the
  agents share one frozen base model wrapped in a single ``PeftModel``; each agent owns a
  named LoRA adapter and its own value head, and the reference is the base with adapters
  disabled. Every call activates the calling agent's adapter first.

The agent scores: :meth:`LLMAgent.forward` and :meth:`LLMAgent.ref_logprobs` score a
:class:`agents.rl.batch.TokenBatch` (response-aligned, TRL's conventions: the logits at
position ``p`` predict token ``p + 1``, the value comes from the hidden state at ``p``).
Sampling is :mod:`agents.policy.sampler`'s; stepping the env is the rollout's
(:mod:`agents.run.rollout`).
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from agents.policy.construction import (
    ADAPTERS,
    DEFAULT_LORA_TARGETS,
    add_lora_adapters,
    enable_adapter_grads,
    hf_model,
    hidden_size,
    prepare_full_copy,
    zero_value_head,
)
from agents.policy.construction import disable_dropout as _disable_dropout
from agents.policy.loading import autocast, check_dtype, ensure_pad_token, resolve_device
from agents.rl.batch import TokenBatch
from agents.rl.maths import logprobs_and_entropy

__all__ = ["AgentOutput", "LLMAgent"]


@dataclass
class AgentOutput:
    """Response-aligned ``(N, T)`` outputs of :meth:`LLMAgent.forward` (with grad)."""

    logprobs: torch.Tensor
    values: torch.Tensor
    entropy: torch.Tensor
    logits: torch.Tensor | None = None
    """``(N, T, V)`` when asked for (``with_logits=True``)."""


class LLMAgent:
    """A causal LM policy with a value head; build it with :meth:`full_copy` or the LoRA factories."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        *,
        reference: nn.Module | None = None,
        adapter: str | None = None,
        value_head: nn.Module | None = None,
        dtype: str = "fp32",
        device: str | torch.device = "cpu",
    ) -> None:
        if adapter is None and reference is None:
            raise ValueError("a full-copy agent needs a reference model (use LLMAgent.full_copy)")
        self.dtype = check_dtype(dtype)
        self.device = resolve_device(device)
        self.model = model
        self.tokenizer = tokenizer
        ensure_pad_token(tokenizer)
        self.pad_id = int(tokenizer.pad_token_id)
        self.reference = reference
        self.adapter = adapter
        self.value_head = zero_value_head(hidden_size(model)) if value_head is None else value_head
        self.value_head.to(self.device)
        self.training = True
        self.keeps_logits = "logits_to_keep" in inspect.signature(hf_model(model).forward).parameters
        """Whether the model's forward takes ``logits_to_keep`` (project only needed positions)."""
        self._own = getattr(model, ADAPTERS)[adapter] if adapter is not None else list(model.parameters())

    # ------------------------------------------------------------------ construction

    @classmethod
    def full_copy(
        cls,
        model: nn.Module,
        tokenizer: Any,
        *,
        reference: nn.Module | None = None,
        dtype: str = "fp32",
        device: str | torch.device = "cpu",
        disable_dropout: bool = True,
    ) -> LLMAgent:
        """Train ``model`` itself (pass a copy to keep the original); the reference is
        ``reference`` (shared, frozen) or a frozen deep copy of ``model``."""
        dev = resolve_device(device)
        if disable_dropout:
            _disable_dropout(model)
        reference = prepare_full_copy(model, reference, dev)
        return cls(model, tokenizer, reference=reference, dtype=dtype, device=dev)

    @classmethod
    def lora_agents(
        cls,
        base_model: nn.Module,
        tokenizer: Any,
        n: int = 2,
        *,
        r: int = 16,
        alpha: int = 32,
        dropout: float = 0.0,
        target_modules: list[str] | str | None = DEFAULT_LORA_TARGETS,
        dtype: str = "fp32",
        device: str | torch.device = "cpu",
        disable_dropout: bool = True,
    ) -> list[LLMAgent]:
        """``n`` agents, each with its own LoRA adapter (and value head) on ONE shared frozen
        base (:func:`agents.policy.construction.add_lora_adapters`). ``base_model`` may
        already be a ``PeftModel``: the adapters are added to it. ``target_modules``
        defaults to every linear layer but the output head; ``None``: peft's default."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        dev = resolve_device(device)
        if disable_dropout:
            _disable_dropout(base_model)
        peft, names = add_lora_adapters(
            base_model, n, r=r, alpha=alpha, dropout=dropout, target_modules=target_modules
        )
        peft.to(dev)
        return [cls(peft, tokenizer, adapter=name, dtype=dtype, device=dev) for name in names]

    @classmethod
    def lora_pair(cls, base_model: nn.Module, tokenizer: Any, **kwargs: Any) -> tuple[LLMAgent, LLMAgent]:
        """Two LoRA agents sharing one frozen base (see :meth:`lora_agents`)."""
        a, b = cls.lora_agents(base_model, tokenizer, n=2, **kwargs)
        return a, b

    @classmethod
    def lora(cls, base_model: nn.Module, tokenizer: Any, **kwargs: Any) -> LLMAgent:
        """One LoRA agent (single-agent PPO); see :meth:`lora_agents`."""
        return cls.lora_agents(base_model, tokenizer, n=1, **kwargs)[0]

    # ------------------------------------------------------------------ modes and state

    @property
    def is_lora(self) -> bool:
        return self.adapter is not None

    def train(self, mode: bool = True) -> LLMAgent:
        self.training = bool(mode)
        self.value_head.train(mode)
        return self

    def eval(self) -> LLMAgent:
        return self.train(False)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """LoRA: this agent's adapter and value head; full copy: the model and value head."""
        return [*self._own, *self.value_head.parameters()]

    def _adapter_params(self) -> dict[str, torch.Tensor]:
        key = f".{self.adapter}."
        return {k.replace(key, "."): p for k, p in self.model.named_parameters() if key in k}

    def state_dict(self) -> dict[str, Any]:
        """The trainable weights (tensors shared with the live ones, as torch's)."""
        if self.is_lora:
            own = {k: p.detach() for k, p in self._adapter_params().items()}
            return {"adapter": own, "value_head": self.value_head.state_dict()}
        return {"model": self.model.state_dict(), "value_head": self.value_head.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Load what :meth:`state_dict` returned (a LoRA state loads into any adapter name)."""
        kind = "adapter" if self.is_lora else "model"
        if kind not in state:
            other = "full-copy" if self.is_lora else "LoRA"
            raise ValueError(f"cannot load a {other} agent's state into a {'LoRA' if self.is_lora else 'full-copy'} agent")
        if self.is_lora:
            own = self._adapter_params()
            if set(own) != set(state["adapter"]):
                missing, extra = set(own) - set(state["adapter"]), set(state["adapter"]) - set(own)
                raise ValueError(f"adapter state mismatch: missing {sorted(missing)[:3]}, unexpected {sorted(extra)[:3]}")
            with torch.no_grad():
                for k, p in own.items():
                    p.copy_(state["adapter"][k])
        else:
            self.model.load_state_dict(state["model"])
        self.value_head.load_state_dict(state["value_head"])

    # ------------------------------------------------------------------ forward passes

    def _activate(self) -> None:
        """Make this agent's adapter the active one (LoRA); no-op for a full copy."""
        if self.is_lora and self.model.active_adapter != self.adapter:
            self.model.set_adapter(self.adapter)
            enable_adapter_grads(self.model)

    @contextlib.contextmanager
    def policy(self, training: bool) -> Iterator[nn.Module]:
        """The policy model, this agent's adapter active, in ``training`` mode, under the
        agent's compute dtype (what the sampler and :meth:`forward` run under)."""
        self._activate()
        if self.model.training != training:
            self.model.train(training)
        with autocast(self.dtype, self.device):
            yield self.model

    @contextlib.contextmanager
    def _reference(self) -> Iterator[nn.Module]:
        with autocast(self.dtype, self.device):
            if not self.is_lora:
                yield self.reference
                return
            if self.model.training:
                self.model.eval()
            try:
                with self.model.disable_adapter():
                    yield self.model
            finally:
                enable_adapter_grads(self.model)  # peft's re-enable froze the other adapters

    def _logits_at(self, model: nn.Module, batch: TokenBatch, hidden: bool):
        """``(logits (N, T, V), last hidden state (N, T, H) or None)`` at the logit positions."""
        pos = batch.logit_positions()
        s = batch.input_ids.shape[1]
        kwargs: dict[str, Any] = {"attention_mask": batch.attention_mask}
        if self.keeps_logits:
            kwargs["logits_to_keep"] = s - int(batch.query_lengths.min()) + 1
        out = model(input_ids=batch.input_ids, output_hidden_states=hidden, use_cache=False, **kwargs)
        logits = out.logits
        idx = pos - (s - logits.shape[1])
        logits = logits.gather(1, idx.unsqueeze(-1).expand(-1, -1, logits.shape[-1]))
        if not hidden:
            return logits, None
        h = out.hidden_states[-1]
        return logits, h.gather(1, pos.unsqueeze(-1).expand(-1, -1, h.shape[-1]))

    def forward(self, batch: TokenBatch, *, with_logits: bool = False) -> AgentOutput:
        """Log-probs, values and entropy of the response tokens under the policy (with grad)."""
        with self.policy(self.training) as model:
            logits, h = self._logits_at(model, batch, hidden=True)
            values = self.value_head(h.to(self.value_head.weight.dtype)).squeeze(-1)
        logprobs, entropy = logprobs_and_entropy(logits, batch.response_ids)
        return AgentOutput(logprobs, values.float(), entropy, logits if with_logits else None)

    __call__ = forward

    @torch.no_grad()
    def ref_logprobs(self, batch: TokenBatch, *, full: bool = False) -> torch.Tensor:
        """``(N, T)`` response log-probs under the reference; ``full=True``: ``(N, T, V)`` log-softmax."""
        with self._reference() as ref:
            logits, _ = self._logits_at(ref, batch, hidden=False)
        logp = logits.float().log_softmax(-1)
        return logp if full else logp.gather(-1, batch.response_ids.unsqueeze(-1)).squeeze(-1)
