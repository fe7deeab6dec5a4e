"""An agent's LoRA layers in fewer calls, without writing the shared base's weights.

peft's LoRA ``Linear`` computes ``base(x) + lora_B(lora_A(dropout(x))) * scale`` through
five modules forward and about ten autograd nodes backward per layer, and a decode step
through it runs three matmuls per layer where the base model runs one. Inside
:meth:`agents.policy.agent.LLMAgent.policy` each plain LoRA layer of the active adapter
(:func:`plain_layers`: its base's weights in the adapter's dtype) runs one of two ways
instead:

- **merged** (:func:`merged_forwards`, the sampler's): ``F.linear(x, W + scale * B @ A, b)``
  with the merged weight a tensor of its own, built once when the sampler opens: a decode
  step costs what the base model's does. The base's weights are never written (no
  merge-then-unmerge round trip, which drifts by rounding), so the frozen base, which is
  also the reference, stays bit-identical. Hence the common dtype: merged into a bf16
  base, an adapter's small early updates would round away.
- **fused** (:func:`fused_forwards`, scoring): one autograd function per layer
  (:class:`LoraLinear`) computes peft's sum in peft's order, and in its backward the
  gradients of the input and of ``A`` and ``B`` from the same matmuls autograd would run:
  the same numbers through one autograd node per layer. Only without autocast (fp32
  compute).

A layer with DoRA or another LoRA variant, a bias on ``lora_B``, active dropout,
``fan_in_fan_out``, a merged adapter or several active adapters keeps peft's forward; so
does every layer of a model that recomputes its activations in the backward pass
(:func:`recomputes`: the recomputation runs after the block, through peft's layers).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "LoraLinear",
    "fused_forwards",
    "merged_forwards",
    "merged_weight",
    "plain_layers",
    "recomputes",
    "replaced_forwards",
]


def _dropout_off(layer: Any, adapter: str) -> bool:
    drop = layer.lora_dropout[adapter]
    return isinstance(drop, nn.Identity) or not drop.training or drop.p == 0.0


def plain_layers(model: nn.Module, adapter: str) -> list[Any]:
    """The peft LoRA ``Linear`` layers of ``model`` whose forward is the plain
    ``base(x) + scale * B(A(x))`` for ``adapter`` (the one active adapter), the base's
    weights in the adapter's dtype: what the merged and fused forwards replace."""
    try:
        from peft.tuners.lora.layer import Linear
    except ImportError:  # no peft: no LoRA layers
        return []
    return [
        m
        for m in model.modules()
        if type(m) is Linear
        and adapter in m.lora_A
        and list(m.active_adapters) == [adapter]
        and not m.disable_adapters
        and not m.merged
        and not m.fan_in_fan_out
        and adapter not in m.lora_variant
        and type(m.base_layer) is nn.Linear
        and m.lora_B[adapter].bias is None
        and m.base_layer.weight.dtype == m.lora_A[adapter].weight.dtype
        and _dropout_off(m, adapter)
    ]


def recomputes(model: nn.Module) -> bool:
    """Whether ``model`` has activation checkpointing on (a layer recomputes its forward
    in the backward pass)."""
    return any(getattr(m, "gradient_checkpointing", False) is True for m in model.modules())


def merged_weight(layer: Any, adapter: str) -> torch.Tensor:
    """``W + scale * B @ A`` of a plain LoRA layer (a new tensor; ``W`` is not written)."""
    a, b = layer.lora_A[adapter].weight, layer.lora_B[adapter].weight
    w = layer.base_layer.weight
    return torch.addmm(w, b, a, alpha=layer.scaling[adapter])


@contextlib.contextmanager
def replaced_forwards(layers: Sequence[nn.Module], make: Any) -> Iterator[None]:
    """Each module's ``forward`` replaced by ``make(module)`` for the block (an instance
    attribute over the class's method: hooks and ``__call__`` are unchanged)."""
    installed = []
    try:
        for layer in layers:
            layer.forward = make(layer)
            installed.append(layer)
        yield
    finally:
        for layer in installed:
            del layer.forward


def merged_forwards(layers: Sequence[Any], adapter: str) -> contextlib.AbstractContextManager:
    """In the block, each layer of ``layers`` (:func:`plain_layers`) runs as one linear on
    its merged weight (built here, freed at the end); no grad flows through them."""

    def make(layer: Any) -> Any:
        with torch.no_grad():
            weight = merged_weight(layer, adapter)
        bias = layer.base_layer.bias

        def forward(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            return F.linear(x, weight, bias)

        return forward

    return replaced_forwards(layers, make)


class LoraLinear(torch.autograd.Function):
    """``x W^T + b + scale * (x A^T) B^T`` over ``x`` ``(..., in)`` with ``W`` ``(out, in)``,
    ``A`` ``(r, in)``, ``B`` ``(out, r)``; gradients for ``x``, ``A``, ``B`` (and ``W``, ``b``
    where they require one)."""

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        a: torch.Tensor,
        b: torch.Tensor,
        scale: float,
    ) -> torch.Tensor:
        x2 = x.reshape(-1, x.shape[-1])
        h = torch.mm(x2, a.t())
        out = F.linear(x2, weight, bias)
        out += torch.mm(h, b.t()).mul_(scale)
        ctx.save_for_backward(x2, h, weight, a, b)
        ctx.scale, ctx.shape, ctx.has_bias = scale, x.shape, bias is not None
        return out.view(*x.shape[:-1], out.shape[-1])

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x2, h, weight, a, b = ctx.saved_tensors
        g = grad.reshape(-1, grad.shape[-1])
        gs = g * ctx.scale  # the gradient at lora_B's output, as autograd has it
        grad_b = torch.mm(gs.t(), h)
        grad_h = torch.mm(gs, b)
        grad_a = torch.mm(grad_h.t(), x2)
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.mm(g, weight).add_(torch.mm(grad_h, a)).view(ctx.shape)
        grad_w = torch.mm(g.t(), x2) if ctx.needs_input_grad[1] else None
        grad_bias = g.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_bias, grad_a, grad_b, None


def fused_forwards(layers: Sequence[Any], adapter: str) -> contextlib.AbstractContextManager:
    """In the block, each layer of ``layers`` (:func:`plain_layers`) runs as one
    :class:`LoraLinear` (call it outside autocast: the function casts nothing)."""

    def make(layer: Any) -> Any:
        a, b = layer.lora_A[adapter].weight, layer.lora_B[adapter].weight
        base, scale = layer.base_layer, float(layer.scaling[adapter])

        def forward(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            return LoraLinear.apply(x, base.weight, base.bias, a, b, scale)

        return forward

    return replaced_forwards(layers, make)
