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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn

from agents.distributed import World
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
from agents.policy.forward import (
    keep_positions,
    packed_outputs,
    packing_matches,
    padded_outputs,
    unflatten,
)
from agents.policy.loading import autocast, check_dtype, ensure_pad_token, resolve_device
from agents.policy.lora_calls import fused_forwards, merged_forwards, plain_layers, recomputes
from agents.policy.packing import attention_cost
from agents.policy.sharding import load_model_shards, load_model_state, model_shards, model_state
from agents.rl.batch import TokenBatch
from agents.rl.maths import logprobs_and_entropy

if TYPE_CHECKING:
    from peft import PeftModel

__all__ = ["AgentOutput", "LLMAgent", "keep_positions"]


@dataclass
class AgentOutput:
    """Response-aligned ``(N, T)`` outputs of :meth:`LLMAgent.forward` (with grad)."""

    logprobs: torch.Tensor
    values: torch.Tensor | None
    """None for an agent built without a value head."""
    entropy: torch.Tensor
    logits: torch.Tensor | None = None
    """``(N, T, V)`` when asked for (``with_logits=True``)."""


class LLMAgent:
    """A causal LM policy with a value head (``value_head=False``: none, for critic-free
    learners); build it with :meth:`full_copy` or the LoRA factories."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        *,
        reference: nn.Module | None = None,
        adapter: str | None = None,
        value_head: nn.Module | bool | None = None,
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
        if value_head is None or value_head is True:
            value_head = zero_value_head(hidden_size(model))
        self.value_head: nn.Module | None = value_head if value_head is not False else None
        """The scalar value head (None: built without one; ``forward`` then gives no values)."""
        if self.value_head is not None:
            self.value_head.to(self.device)
        self.training = True
        self.keeps_logits = (
            "logits_to_keep" in inspect.signature(hf_model(model).forward).parameters
        )
        """Whether the model's forward takes ``logits_to_keep`` (project only needed positions)."""
        self._own: list[nn.Parameter] | None = (
            getattr(model, ADAPTERS)[adapter] if adapter is not None else None
        )
        self.packing = True
        """Score packed sequences (:mod:`agents.policy.packing`) where the model's packed
        logits match its padded ones; False: always padded."""
        self._packs: bool | None = None
        self._attention_cost = attention_cost(hf_model(model).config)
        self.sharded_over: World | None = None
        """The processes this agent's models are FSDP-sharded over (:mod:`agents.policy.
        sharding`; None: not sharded): each forward is then a collective of theirs."""
        self.fast_lora = True
        """Run the adapter's LoRA layers merged when sampling and fused when scoring
        (:mod:`agents.policy.lora_calls`); False: peft's layers."""

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
        value_head: bool = True,
    ) -> LLMAgent:
        """Train ``model`` itself (pass a copy to keep the original); the reference is
        ``reference`` (shared, frozen) or a frozen deep copy of ``model``; ``value_head=False``
        builds no value head."""
        dev = resolve_device(device)
        if disable_dropout:
            _disable_dropout(model)
        reference = prepare_full_copy(model, reference, dev)
        return cls(
            model, tokenizer, reference=reference, value_head=value_head, dtype=dtype, device=dev
        )

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
        value_heads: bool | Sequence[bool] = True,
    ) -> list[LLMAgent]:
        """``n`` agents, each with its own LoRA adapter (and value head) on ONE shared frozen
        base (:func:`agents.policy.construction.add_lora_adapters`). ``base_model`` may
        already be a ``PeftModel``: the adapters are added to it. ``target_modules``
        defaults to every linear layer but the output head; ``None``: peft's default.
        ``value_heads``: whether each agent (or all) gets a value head."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        heads = (
            [value_heads] * n if isinstance(value_heads, bool) else [bool(h) for h in value_heads]
        )
        if len(heads) != n:
            raise ValueError(f"value_heads has {len(heads)} entries for {n} agents")
        dev = resolve_device(device)
        if disable_dropout:
            _disable_dropout(base_model)
        peft, names = add_lora_adapters(
            base_model, n, r=r, alpha=alpha, dropout=dropout, target_modules=target_modules
        )
        peft.to(dev)
        return [
            cls(peft, tokenizer, adapter=name, value_head=head, dtype=dtype, device=dev)
            for name, head in zip(names, heads)
        ]

    @classmethod
    def lora_pair(
        cls, base_model: nn.Module, tokenizer: Any, **kwargs: Any
    ) -> tuple[LLMAgent, LLMAgent]:
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
        if self.value_head is not None:
            self.value_head.train(mode)
        return self

    def eval(self) -> LLMAgent:
        return self.train(False)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """LoRA: this agent's adapter and value head; full copy: the model and value head."""
        head = [] if self.value_head is None else list(self.value_head.parameters())
        # LoRA: the adapter's own; full copy: read now (sharding replaces them)
        own = list(self.model.parameters()) if self._own is None else self._own
        return [*own, *head]

    def _adapter_params(self) -> dict[str, torch.Tensor]:
        key = f".{self.adapter}."
        return {k.replace(key, "."): p for k, p in self.model.named_parameters() if key in k}

    def state_dict(self) -> dict[str, Any]:
        """The trainable weights (tensors shared with the live ones, as torch's); no
        ``value_head`` entry for an agent without one."""
        state: dict[str, Any]
        if self.is_lora:
            state = {"adapter": {k: p.detach() for k, p in self._adapter_params().items()}}
        elif (
            self.sharded_over is not None and self.sharded_over.sharded_checkpoints
        ):  # this process's shards
            state = {"model": model_shards(self.model)}
        elif (
            self.sharded_over is not None
        ):  # gathered whole (a collective; empty off the main process)
            state = {"model": model_state(self.model)}
        else:
            state = {"model": self.model.state_dict()}
        if self.value_head is not None:
            state["value_head"] = self.value_head.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Load what :meth:`state_dict` returned (a LoRA state loads into any adapter name)."""
        kind = "adapter" if self.is_lora else "model"
        if ("value_head" in state) != (self.value_head is not None):
            state_has = "has a" if "value_head" in state else "has no"
            agent_has = "has one" if self.value_head is not None else "has none"
            raise ValueError(
                f"value head mismatch: the state {state_has} value head, this agent "
                f"{agent_has} (value heads are built only for learners that use one)"
            )
        if kind not in state:
            other = "full-copy" if self.is_lora else "LoRA"
            raise ValueError(
                f"cannot load a {other} agent's state into a {'LoRA' if self.is_lora else 'full-copy'} agent"
            )
        if self.is_lora:
            own = self._adapter_params()
            if set(own) != set(state["adapter"]):
                missing, extra = set(own) - set(state["adapter"]), set(state["adapter"]) - set(own)
                raise ValueError(
                    f"adapter state mismatch: missing {sorted(missing)[:3]}, unexpected {sorted(extra)[:3]}"
                )
            with torch.no_grad():
                for k, p in own.items():
                    p.copy_(state["adapter"][k])
        elif self.sharded_over is not None and self.sharded_over.sharded_checkpoints:
            load_model_shards(self.model, state["model"])
        elif self.sharded_over is not None:
            load_model_state(self.model, state["model"])
        else:
            self.model.load_state_dict(state["model"])
        if self.value_head is not None:
            self.value_head.load_state_dict(state["value_head"])

    # ------------------------------------------------------------------ forward passes

    def _activate(self) -> None:
        """Make this agent's adapter the active one (LoRA); no-op for a full copy."""
        if self.adapter is None:
            return
        peft = cast("PeftModel", self.model)  # a LoRA agent's model
        if peft.active_adapter != self.adapter:
            peft.set_adapter(self.adapter)
            enable_adapter_grads(peft)

    @contextlib.contextmanager
    def policy(self, training: bool, *, sampling: bool = False) -> Iterator[nn.Module]:
        """The policy model, this agent's adapter active, in ``training`` mode, under the
        agent's compute dtype (what the sampler and :meth:`forward` run under); with
        :attr:`fast_lora`, its LoRA layers merged (``sampling``: no grad) or fused."""
        self._activate()
        if self.model.training != training:
            self.model.train(training)
        with autocast(self.dtype, self.device), self._lora_calls(sampling):
            yield self.model

    def _lora_calls(self, sampling: bool) -> contextlib.AbstractContextManager:
        """The LoRA layers' forwards of :meth:`policy` (:mod:`agents.policy.lora_calls`)."""
        if not self.fast_lora or self.adapter is None or self.sharded_over is not None:
            return contextlib.nullcontext()
        if sampling:
            return merged_forwards(plain_layers(self.model, self.adapter), self.adapter)
        if self.dtype != "fp32":  # under autocast: peft's layers cast what they need
            return contextlib.nullcontext()
        if self.model.training and torch.is_grad_enabled() and recomputes(self.model):
            return contextlib.nullcontext()  # the backward's recomputation runs peft's layers
        return fused_forwards(plain_layers(self.model, self.adapter), self.adapter)

    @contextlib.contextmanager
    def _reference(self) -> Iterator[nn.Module]:
        with autocast(self.dtype, self.device):
            if not self.is_lora:
                assert self.reference is not None, "a full-copy agent has a reference"
                yield self.reference
                return
            if self.model.training:
                self.model.eval()
            try:
                with cast("PeftModel", self.model).disable_adapter():
                    yield self.model
            finally:
                enable_adapter_grads(self.model)  # peft's re-enable froze the other adapters

    def _response_outputs(self, model: nn.Module, batch: TokenBatch, hidden: bool):
        """``(logits (R, V), hidden (R, H) or None, rows, cols)`` of the real response
        tokens (:mod:`agents.policy.forward`): packed where this model's packed logits match
        its padded ones (checked once, on the first batch of two or more sequences), else
        padded."""
        keeps, dev, pad, cost = self.keeps_logits, self.device, self.pad_id, self._attention_cost
        if self.packing and self._packs is None and len(batch) > 1:
            self._packs = packing_matches(
                model,
                batch,
                dtype=self.dtype,
                pad_id=pad,
                attention_cost=cost,
                keeps_logits=keeps,
                device=dev,
            )
        if self.packing and self._packs:
            return packed_outputs(
                model,
                batch,
                hidden,
                pad_id=pad,
                attention_cost=cost,
                keeps_logits=keeps,
                device=dev,
            )
        return padded_outputs(model, batch, hidden, keeps_logits=keeps, device=dev)

    def forward(self, batch: TokenBatch, *, with_logits: bool = False) -> AgentOutput:
        """Log-probs, values (None without a value head) and entropy of the response tokens
        under the policy (with grad); all three are 0 at padded response positions."""
        head = self.value_head
        with self.policy(self.training) as model:
            logits, h, rows, cols = self._response_outputs(model, batch, hidden=head is not None)
            values = None if head is None else head(h.to(head.weight.dtype)).squeeze(-1).float()
        logprobs, entropy = logprobs_and_entropy(logits, batch.response_ids[rows, cols])
        shape = batch.response_ids.shape
        return AgentOutput(
            unflatten(logprobs, rows, cols, shape),
            None if values is None else unflatten(values, rows, cols, shape),
            unflatten(entropy, rows, cols, shape),
            unflatten(logits, rows, cols, shape) if with_logits else None,
        )

    __call__ = forward

    @torch.no_grad()
    def ref_logprobs(self, batch: TokenBatch, *, full: bool = False) -> torch.Tensor:
        """``(N, T)`` response log-probs under the reference (0 at padding); ``full=True``:
        ``(N, T, V)`` log-softmax (0 at padding)."""
        with self._reference() as ref:
            logits, _, rows, cols = self._response_outputs(ref, batch, hidden=False)
        logp = logits.float().log_softmax(-1)
        if not full:
            logp = logp.gather(-1, batch.response_ids[rows, cols].unsqueeze(-1)).squeeze(-1)
        return unflatten(logp, rows, cols, batch.response_ids.shape)
