"""Nested training state <-> (JSON text, named tensors), with no code execution on load.

A trainer's state is dicts, lists and tuples of tensors, numpy arrays and plain numbers
(weights, optimiser state, KL controllers, RNG states). :func:`encode` splits it into a
JSON-able tree, where every tensor or array is a reference ``{"__tensor__": name}``, and a
flat ``{name: tensor}`` dict for safetensors; :func:`decode` puts them back together.
Loading reads JSON and safetensors only, so a checkpoint cannot run code (unlike a pickle).

A :class:`Shard` (one process's part of a tensor sharded over several, FSDP's sharded
checkpoints) is stored like a tensor under ``{"__shard__": name}``: each process writes its
own shards under the same names (:func:`shard_names`), and :func:`decode` takes them from
the ``shards`` given.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from agents.distributed import Shard

__all__ = ["Shard", "decode", "encode", "non_finite", "shard_names"]

_TENSOR, _ARRAY, _TUPLE, _MAP, _SHARD = (
    "__tensor__",
    "__ndarray__",
    "__tuple__",
    "__map__",
    "__shard__",
)


def encode(state: Any) -> tuple[Any, dict[str, torch.Tensor]]:
    """``(tree, tensors)``: ``tree`` is JSON-able; ``tensors`` maps reference names (the
    tensor's path in the state, e.g. ``/trainer/learners/model_a/agent/value_head/weight``)
    to contiguous CPU copies (safetensors refuses shared storage)."""
    tensors: dict[str, torch.Tensor] = {}

    def store(path: str, t: torch.Tensor) -> str:
        name = path or "tensor"
        while name in tensors:
            name += "'"
        tensors[name] = t
        return name

    def enc(x: Any, path: str) -> Any:
        if isinstance(x, torch.Tensor):
            return {_TENSOR: store(path, x.detach().to("cpu").contiguous().clone())}
        if isinstance(x, Shard):
            return {_SHARD: store(path, x.local.detach().to("cpu").contiguous().clone())}
        if isinstance(x, np.ndarray):
            return {_ARRAY: store(path, torch.from_numpy(np.ascontiguousarray(x).copy()))}
        if isinstance(x, np.generic):
            return x.item()
        if isinstance(x, dict):
            if all(isinstance(k, str) and not k.startswith("__") for k in x):
                return {k: enc(v, f"{path}/{k}") for k, v in x.items()}
            return {_MAP: [[enc(k, path), enc(v, f"{path}/{k}")] for k, v in x.items()]}
        if isinstance(x, tuple):
            return {_TUPLE: [enc(v, f"{path}/{i}") for i, v in enumerate(x)]}
        if isinstance(x, list):
            return [enc(v, f"{path}/{i}") for i, v in enumerate(x)]
        if x is None or isinstance(x, (bool, int, float, str)):
            return x
        raise TypeError(
            f"cannot store a {type(x).__name__} at {path!r} in a checkpoint "
            "(tensors, arrays, numbers, strings, lists, tuples and dicts only)"
        )

    return enc(state, ""), tensors


def decode(
    tree: Any, tensors: dict[str, torch.Tensor], shards: dict[str, torch.Tensor] | None = None
) -> Any:
    """The state :func:`encode` split into ``(tree, tensors)``; a :class:`Shard`'s place gets
    its tensor from ``shards`` (this process's; default ``tensors``)."""
    shards = tensors if shards is None else shards

    def dec(x: Any) -> Any:
        if isinstance(x, list):
            return [dec(v) for v in x]
        if not isinstance(x, dict):
            return x
        if _TENSOR in x:
            return tensors[x[_TENSOR]]
        if _SHARD in x:
            return shards[x[_SHARD]]
        if _ARRAY in x:
            return tensors[x[_ARRAY]].numpy()
        if _TUPLE in x:
            return tuple(dec(v) for v in x[_TUPLE])
        if _MAP in x:
            return {_key(dec(k)): dec(v) for k, v in x[_MAP]}
        return {k: dec(v) for k, v in x.items()}

    return dec(tree)


def _key(k: Any) -> Any:
    return tuple(k) if isinstance(k, list) else k


def non_finite(tensors: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors holding a NaN or an infinity."""
    return [
        name
        for name, t in tensors.items()
        if t.is_floating_point() and not bool(torch.isfinite(t).all())
    ]


def shard_names(tree: Any) -> list[str]:
    """The names of the :class:`Shard` references in an encoded ``tree``."""
    if isinstance(x := tree, list):
        return [n for v in x for n in shard_names(v)]
    if not isinstance(x, dict):
        return []
    if _SHARD in x:
        return [x[_SHARD]]
    if _TENSOR in x or _ARRAY in x:
        return []
    return [n for v in x.values() for n in shard_names(v)]
