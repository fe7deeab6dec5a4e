"""``LLMAgent``: a causal LM policy plus a scalar value head, as CORY's learners see it.

Two ways to hold the weights:

- :meth:`LLMAgent.full_copy` (the paper's setting): the agent trains a full copy of the
  model; the reference is a frozen deep copy, or one frozen model shared by several agents.
- :meth:`LLMAgent.lora_agents` / :meth:`LLMAgent.lora_pair` / :meth:`LLMAgent.lora`: the
  agents share one frozen base model wrapped in a single ``PeftModel``; each agent owns a
  named LoRA adapter and its own value head, and the reference is the base with adapters
  disabled. Every call activates the calling agent's adapter first.

:meth:`LLMAgent.act` plays the vector env's current role token by token with a KV cache;
:meth:`LLMAgent.forward` and :meth:`LLMAgent.ref_logprobs` score a
:class:`agents.batch.TokenBatch` (response-aligned, TRL's conventions: the logits at
position ``p`` predict token ``p + 1``, the value comes from the hidden state at ``p``).
"""

from __future__ import annotations

import contextlib
import copy
import inspect
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from agents.batch import TokenBatch
from agents.models import autocast, check_dtype, ensure_pad_token, resolve_device

_ADAPTERS = "_cory_adapter_params"  # PeftModel attribute: adapter name -> its parameters


@dataclass
class AgentOutput:
    """Response-aligned ``(N, T)`` outputs of :meth:`LLMAgent.forward` (with grad)."""

    logprobs: torch.Tensor
    values: torch.Tensor
    entropy: torch.Tensor
    logits: torch.Tensor | None = None
    """``(N, T, V)`` when asked for (``with_logits=True``)."""


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
    if generator is not None and generator.device != probs.device:  # e.g. a CPU generator, CUDA model
        return torch.multinomial(probs.to(generator.device), 1, generator=generator).squeeze(1).to(probs.device)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


def zero_value_head(hidden: int) -> nn.Linear:
    """A scalar value head that starts at exactly 0.

    A randomly initialised head reads the LM's final hidden state (norm ~ sqrt(hidden)) into
    values far larger than a task's rewards, and its errors then swamp the GAE advantages
    for many iterations; starting at 0 makes the first advantages plain reward-to-go.
    """
    head = nn.Linear(hidden, 1)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    return head


def _disable_dropout(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
        if isinstance(getattr(m, "attention_dropout", None), float):
            m.attention_dropout = 0.0


def _hf_model(model: nn.Module) -> nn.Module:
    """The transformers model inside a ``PeftModel`` (or ``model`` itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def enable_activation_checkpointing(model: nn.Module) -> None:
    """Keep only each decoder layer's input during a forward with grad and recompute the
    rest in the backward pass (transformers' activation checkpointing, non-reentrant).

    A PPO update then holds ``layers x tokens x hidden`` activations instead of everything
    each layer computes, for about one more forward pass of compute. It applies to
    training-mode forwards only: :meth:`LLMAgent.act` and reference passes are unchanged.
    For LoRA agents it is a property of the shared base, so it covers every adapter.
    """
    hf = _hf_model(model)
    if not getattr(hf, "supports_gradient_checkpointing", False):
        raise ValueError(f"{type(hf).__name__} does not support activation checkpointing")
    enable = getattr(hf, "activation_checkpointing_enable", None)
    if enable is not None:  # transformers >= 5.x
        enable({"use_reentrant": False})
    else:
        hf.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def _hidden_size(model: nn.Module) -> int:
    head = _hf_model(model).get_output_embeddings()
    if isinstance(head, nn.Linear):
        return head.in_features
    return int(_hf_model(model).config.get_text_config().hidden_size)


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
        self.value_head = zero_value_head(_hidden_size(model)) if value_head is None else value_head
        self.value_head.to(self.device)
        self.training = True
        params = inspect.signature(_hf_model(model).forward).parameters
        self._keep = "logits_to_keep" in params
        if adapter is not None:
            self._own = getattr(model, _ADAPTERS)[adapter]
        else:
            self._own = list(model.parameters())

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
        if reference is model:
            raise ValueError("the reference must be a different object from the trained model")
        dev = resolve_device(device)
        if disable_dropout:
            _disable_dropout(model)
        if reference is None:
            reference = copy.deepcopy(model)
        reference.to(dev).eval().requires_grad_(False)
        model.to(dev).requires_grad_(True)
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
        target_modules: list[str] | str = "all-linear",
        dtype: str = "fp32",
        device: str | torch.device = "cpu",
        disable_dropout: bool = True,
    ) -> list[LLMAgent]:
        """``n`` agents, each with its own LoRA adapter (and value head) on ONE shared frozen
        base. ``base_model`` may already be a ``PeftModel``: the adapters are added to it.
        ``target_modules`` defaults to every linear layer but the output head (peft's
        ``"all-linear"``): peft's per-architecture default (attention q/v only) barely moves
        a policy's output distribution in a few PPO iterations; pass ``None`` for it."""
        from peft import LoraConfig, PeftModel, get_peft_model

        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        dev = resolve_device(device)
        if disable_dropout:
            _disable_dropout(base_model)

        def config(targets):
            return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout,
                              target_modules=targets, task_type="CAUSAL_LM")

        peft = base_model if isinstance(base_model, PeftModel) else None
        registry: dict[str, list[nn.Parameter]] = getattr(peft, _ADAPTERS, {}) if peft else {}
        taken = set(peft.peft_config) if peft is not None else set()
        names, i = [], 0
        while len(names) < n:
            if f"agent{i}" not in taken:
                names.append(f"agent{i}")
            i += 1
        for name in names:
            if peft is None:
                base_model.requires_grad_(False)
                try:
                    peft = get_peft_model(base_model, config(target_modules), adapter_name=name)
                except ValueError:
                    if target_modules is not None:
                        raise
                    # no peft default for this architecture
                    peft = get_peft_model(base_model, config("all-linear"), adapter_name=name)
            else:
                peft.add_adapter(name, config(target_modules or _targets(peft)))
            key = f".{name}."
            registry[name] = [p for k, p in peft.named_parameters() if key in k]
        setattr(peft, _ADAPTERS, registry)
        peft.to(dev)
        _enable_adapter_grads(peft)
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

    def state_dict(self) -> dict[str, Any]:
        """The trainable weights (tensors shared with the live ones, as torch's)."""
        if self.is_lora:
            key = f".{self.adapter}."
            own = {k.replace(key, "."): p.detach() for k, p in self.model.named_parameters() if key in k}
            return {"adapter": own, "value_head": self.value_head.state_dict()}
        return {"model": self.model.state_dict(), "value_head": self.value_head.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Load what :meth:`state_dict` returned (a LoRA state loads into any adapter name)."""
        kind = "adapter" if self.is_lora else "model"
        if kind not in state:
            other = "full-copy" if self.is_lora else "LoRA"
            raise ValueError(f"cannot load a {other} agent's state into a {'LoRA' if self.is_lora else 'full-copy'} agent")
        if self.is_lora:
            key = f".{self.adapter}."
            own = {k.replace(key, "."): p for k, p in self.model.named_parameters() if key in k}
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
            _enable_adapter_grads(self.model)

    @contextlib.contextmanager
    def _policy(self, training: bool) -> Iterator[nn.Module]:
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
                _enable_adapter_grads(self.model)  # peft's re-enable froze the other adapters

    def _logits_at(self, model: nn.Module, batch: TokenBatch, hidden: bool):
        """``(logits (N, T, V), last hidden state (N, T, H) or None)`` at the logit positions."""
        pos = batch.logit_positions()
        s = batch.input_ids.shape[1]
        kwargs: dict[str, Any] = {"attention_mask": batch.attention_mask}
        keep = s - int(batch.query_lengths.min()) + 1
        if self._keep:
            kwargs["logits_to_keep"] = keep
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
        with self._policy(self.training) as model:
            logits, h = self._logits_at(model, batch, hidden=True)
            values = self.value_head(h.to(self.value_head.weight.dtype)).squeeze(-1)
        logp = logits.float().log_softmax(-1)
        logprobs = logp.gather(-1, batch.response_ids.unsqueeze(-1)).squeeze(-1)
        entropy = -(logp.exp() * logp).sum(-1)
        return AgentOutput(logprobs, values.float(), entropy, logits if with_logits else None)

    __call__ = forward

    @torch.no_grad()
    def ref_logprobs(self, batch: TokenBatch, *, full: bool = False) -> torch.Tensor:
        """``(N, T)`` response log-probs under the reference; ``full=True``: ``(N, T, V)`` log-softmax."""
        with self._reference() as ref:
            logits, _ = self._logits_at(ref, batch, hidden=False)
        logp = logits.float().log_softmax(-1)
        return logp if full else logp.gather(-1, batch.response_ids.unsqueeze(-1)).squeeze(-1)

    # ------------------------------------------------------------------ acting

    @torch.no_grad()
    def act(
        self,
        venv: Any,
        generation: Any,
        *,
        generator: torch.Generator | None = None,
        max_new_tokens: int | None = None,
    ) -> list[np.ndarray]:
        """Play ``venv``'s current role to the end of its turn; return each env's response ids.

        One prefill forward over the left-padded prompts, then one cached forward per token;
        sampling follows ``generation`` (temperature, top_k, top_p). ``max_new_tokens`` is a
        safety cap: a turn running longer raises. ``generator`` is best on the agent's device
        (one on another device works, at the cost of a copy per token).
        """
        role = venv.agent_selection
        if role is None:
            raise RuntimeError("the episode is over: reset the venv before act()")
        prompts = [np.asarray(p, dtype=np.int64) for p in venv.prompt_ids]
        if any(len(p) == 0 for p in prompts):
            raise ValueError("every prompt needs at least one token")
        b, p_len = len(prompts), max(len(p) for p in prompts)
        budget = max_new_tokens or int(getattr(venv, "episode_max_new_tokens", 0)
                                       or getattr(generation, "max_new_tokens", 16))
        n_actions = getattr(getattr(venv, "single_action_space", None), "n", None)
        ids = np.full((b, p_len), self.pad_id, dtype=np.int64)
        mask = torch.zeros((b, p_len + budget), dtype=torch.int64)
        for i, p in enumerate(prompts):
            ids[i, p_len - len(p):] = p
            mask[i, p_len - len(p):p_len] = 1
        lengths = torch.tensor([len(p) for p in prompts], dtype=torch.int64, device=self.device)
        positions = (mask[:, :p_len].cumsum(1) - 1).clamp(min=0).to(self.device)
        mask = mask.to(self.device)
        keep = {"logits_to_keep": 1} if self._keep else {}
        with self._policy(training=False) as model:
            out = model(input_ids=torch.from_numpy(ids).to(self.device), attention_mask=mask[:, :p_len],
                        position_ids=positions, use_cache=True, **keep)
            cache, step = out.past_key_values, 0
            while True:
                logits = out.logits[:, -1]
                if n_actions is not None and logits.shape[-1] > n_actions:
                    logits = logits[:, :n_actions]  # padded vocabularies: only real token ids
                tokens = sample_tokens(logits, generation, generator)
                venv.step(tokens.cpu().numpy())
                step += 1
                if venv.agent_selection != role:
                    break
                if max_new_tokens is not None and step >= max_new_tokens:
                    raise RuntimeError(f"the {role} turn did not end within max_new_tokens={max_new_tokens}")
                if p_len + step > mask.shape[1]:
                    mask = torch.cat([mask, torch.zeros_like(mask)], dim=1)
                mask[:, p_len + step - 1] = 1
                out = model(input_ids=tokens.unsqueeze(1), attention_mask=mask[:, :p_len + step],
                            position_ids=(lengths + step - 1).unsqueeze(1), past_key_values=cache,
                            use_cache=True)
                cache = out.past_key_values
        return venv.response_ids(role)


def _targets(peft: nn.Module) -> list[str] | str:
    """The target modules an existing ``PeftModel``'s first adapter uses."""
    first = next(iter(peft.peft_config.values()))
    targets = first.target_modules
    return sorted(targets) if isinstance(targets, set) else targets


def _enable_adapter_grads(peft: nn.Module) -> None:
    """peft freezes inactive adapters when switching; CORY agents keep theirs trainable."""
    for params in getattr(peft, _ADAPTERS, {}).values():
        for p in params:
            p.requires_grad_(True)
