"""The learners' default optimiser: Adam, with torch's fused kernel where it applies.

On the CPU, torch's Adam otherwise steps one parameter at a time, op by op (its ``foreach``
default is for CUDA), which makes the optimiser step a large share of a full-copy update;
the fused kernel steps all parameters at once and takes the same step to float rounding
(see the benchmarks page, docs/benchmarks.md, for the measured step times). Elsewhere
torch's own choice stands: CUDA (its ``foreach`` default) and FSDP's sharded parameters
(``DTensor``s).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

__all__ = ["default_adam", "fuses"]


def _sharded_types() -> tuple[type, ...]:
    """The tensor types the fused kernel does not take (FSDP's ``DTensor``)."""
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # torch built without distributed
        return ()
    return (DTensor,)


def fuses(params: Sequence[torch.Tensor]) -> bool:
    """Whether :func:`default_adam` uses the fused kernel for ``params``: every one a plain
    floating-point tensor on the CPU."""
    sharded = _sharded_types()
    return bool(params) and all(
        p.device.type == "cpu" and p.is_floating_point() and not isinstance(p, sharded)
        for p in params
    )


def default_adam(params: Iterable[torch.nn.Parameter], learning_rate: float) -> torch.optim.Adam:
    """``torch.optim.Adam(params, lr=learning_rate)``, fused on the CPU (:func:`fuses`)."""
    params = list(params)
    return torch.optim.Adam(params, lr=learning_rate, fused=True if fuses(params) else None)
