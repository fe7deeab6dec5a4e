"""Building trainable policies from a causal LM: LoRA adapters or full copies, the value
head, dropout and activation checkpointing.

Shared by :class:`agents.policy.agent.LLMAgent` and :mod:`baselines.sb3_ppo`, so every
policy in the library gets the same adapters (every linear layer but the output head) and
the same zero-initialised value head.
"""

from __future__ import annotations

import copy
import warnings
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn

if TYPE_CHECKING:
    from peft import LoraConfig, PeftModel
    from transformers import PreTrainedModel

__all__ = [
    "ADAPTERS",
    "DEFAULT_LORA_TARGETS",
    "add_lora_adapters",
    "adapter_parameters",
    "disable_dropout",
    "enable_activation_checkpointing",
    "enable_adapter_grads",
    "hf_model",
    "hidden_size",
    "lora_config",
    "prepare_full_copy",
    "with_lora",
    "zero_value_head",
]

ADAPTERS = "_cory_adapter_params"
"""``PeftModel`` attribute: adapter name -> its parameters."""

DEFAULT_LORA_TARGETS = "all-linear"
"""peft's name for every linear layer but the output head. peft's per-architecture default
(attention q/v only) barely moves a policy's output distribution in a few PPO iterations."""


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


def disable_dropout(model: nn.Module) -> None:
    """Dropout off everywhere, so a rollout's log-probs are reproduced in the update."""
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
        if isinstance(getattr(m, "attention_dropout", None), float):
            # torch types Module attribute assignment as Tensor | Module, not plain values
            m.attention_dropout = 0.0  # type: ignore[assignment]


def hf_model(model: nn.Module) -> PreTrainedModel:
    """The transformers model inside a ``PeftModel`` (or ``model`` itself)."""
    get_base = getattr(model, "get_base_model", None)
    return cast("PreTrainedModel", get_base() if callable(get_base) else model)


def hidden_size(model: nn.Module) -> int:
    """The width of the final hidden state (the output head's input)."""
    hf = hf_model(model)
    head = hf.get_output_embeddings()
    if isinstance(head, nn.Linear):
        return head.in_features
    config = hf.config.get_text_config() if hasattr(hf.config, "get_text_config") else hf.config
    return int(config.hidden_size)


def enable_activation_checkpointing(model: nn.Module) -> None:
    """Keep only each decoder layer's input during a forward with grad and recompute the
    rest in the backward pass (transformers' activation checkpointing, non-reentrant).

    A PPO update then holds ``layers x tokens x hidden`` activations instead of everything
    each layer computes, for about one more forward pass of compute. It applies to
    training-mode forwards only: rollouts and reference passes are unchanged. For LoRA
    agents it is a property of the shared base, so it covers every adapter.
    """
    hf = hf_model(model)
    if not getattr(hf, "supports_gradient_checkpointing", False):
        raise ValueError(f"{type(hf).__name__} does not support activation checkpointing")
    enable = getattr(hf, "activation_checkpointing_enable", None)
    if enable is not None:  # transformers >= 5.x
        enable({"use_reentrant": False})
    else:
        hf.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def lora_config(r: int, alpha: int, dropout: float = 0.0, targets: Any = DEFAULT_LORA_TARGETS):
    """A causal-LM ``peft.LoraConfig``."""
    from peft import LoraConfig

    return LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, task_type="CAUSAL_LM"
    )


def _targets(peft: PeftModel) -> list[str] | str | None:
    """The target modules an existing ``PeftModel``'s first adapter uses."""
    first = cast("LoraConfig", next(iter(peft.peft_config.values())))  # adapters of LoRA
    targets = first.target_modules
    return sorted(targets) if isinstance(targets, set) else targets


def _wrap(model: nn.Module, config_of, targets: Any, adapter_name: str = "default") -> PeftModel:
    """``get_peft_model`` with the base frozen; ``targets=None`` is peft's per-architecture
    default, falling back to every linear layer where peft knows none."""
    model.requires_grad_(False)
    try:
        peft = _get_peft_model(model, config_of(targets), adapter_name)
    except ValueError:
        if targets is not None:
            raise
        peft = _get_peft_model(model, config_of(DEFAULT_LORA_TARGETS), adapter_name)
    return cast("PeftModel", peft)  # a PeftMixedModel only with mixed=True


def _get_peft_model(model: nn.Module, config: Any, adapter_name: str) -> Any:
    """peft's ``get_peft_model``, without the FutureWarning its own call of transformers'
    ``is_gradient_checkpointing`` raises (peft's code, not ours: the warning tells a user of
    this library nothing they can act on)."""
    from peft import get_peft_model

    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning
        )
        return get_peft_model(model, config, adapter_name=adapter_name)


def add_lora_adapters(
    base_model: nn.Module,
    n: int,
    *,
    r: int = 16,
    alpha: int = 32,
    dropout: float = 0.0,
    target_modules: list[str] | str | None = DEFAULT_LORA_TARGETS,
) -> tuple[nn.Module, list[str]]:
    """``n`` new named LoRA adapters (``agent0``, ``agent1``, ... skipping taken names) on
    ONE frozen base; ``base_model`` may already be a ``PeftModel``. Returns the
    ``PeftModel`` and the new adapters' names; every adapter stays trainable."""
    from peft import PeftModel

    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")

    def config_of(targets):
        return lora_config(r, alpha, dropout, targets)

    peft = base_model if isinstance(base_model, PeftModel) else None
    registry: dict[str, list[nn.Parameter]] = getattr(peft, ADAPTERS, {}) if peft else {}
    taken = set(peft.peft_config) if peft is not None else set()
    names: list[str] = []
    i = 0
    while len(names) < n:
        if f"agent{i}" not in taken:
            names.append(f"agent{i}")
        i += 1
    for name in names:
        if peft is None:
            peft = _wrap(base_model, config_of, target_modules, adapter_name=name)
        else:
            peft.add_adapter(name, config_of(target_modules or _targets(peft)))
        registry[name] = adapter_parameters(peft, name)
    assert peft is not None, "n >= 1 adapters were added"
    setattr(peft, ADAPTERS, registry)
    enable_adapter_grads(peft)
    return peft, names


def adapter_parameters(peft: nn.Module, name: str) -> list[nn.Parameter]:
    """The parameters of the adapter ``name`` of a ``PeftModel``."""
    key = f".{name}."
    return [p for k, p in peft.named_parameters() if key in k]


def enable_adapter_grads(peft: nn.Module) -> None:
    """peft freezes inactive adapters when switching; CORY agents keep theirs trainable."""
    for params in getattr(peft, ADAPTERS, {}).values():
        for p in params:
            p.requires_grad_(True)


def prepare_full_copy(
    model: nn.Module, reference: nn.Module | None, device: torch.device
) -> nn.Module:
    """Make ``model`` trainable on ``device`` and return its frozen reference: ``reference``
    (shared, frozen here) or a frozen deep copy of ``model``."""
    if reference is model:
        raise ValueError("the reference must be a different object from the trained model")
    if reference is None:
        reference = copy.deepcopy(model)
    _place(reference, device).eval().requires_grad_(False)
    _place(model, device).requires_grad_(True)
    return reference


def _place(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` moved to ``device``, unless its parameters are on ``meta`` (an empty model
    that receives its weights when sharded, :func:`agents.policy.loading.load_model`)."""
    first = next(model.parameters(), None)
    return model if first is not None and first.is_meta else model.to(device)


def with_lora(
    model: nn.Module,
    r: int = 16,
    alpha: int = 32,
    seed: int = 0,
    target_modules: str | list[str] | None = DEFAULT_LORA_TARGETS,
) -> nn.Module:
    """``model`` with one fresh LoRA adapter (only the adapter trains), with the same
    targets as :class:`agents.policy.agent.LLMAgent`'s (every linear layer by default;
    ``None``: peft's per-architecture default)."""
    torch.manual_seed(seed)
    return _wrap(model, lambda targets: lora_config(r, alpha, 0.0, targets), target_modules)
