"""The machine a bench ran on, in one line, printed with its figures: the same "2-core CPU"
can be CPUs whose matmul speeds differ by several times (seen here: one kind without AMX
at ~140-205 fp32 / ~430 bf16 GFLOP/s, one with AMX at ~320-350 / ~1,100-1,700), so a figure without its
machine cannot be compared with another."""

from __future__ import annotations

import platform
from pathlib import Path

import torch

__all__ = ["machine"]

FEATURES = ("amx_bf16", "avx512_bf16", "avx512f", "avx2")
"""The CPU features that decide which matmul kernels run (AMX and AVX-512 BF16: bf16)."""


def _cpu() -> tuple[str, list[str]]:
    """``(model name, the FEATURES it has)`` from ``/proc/cpuinfo`` (Linux), else the platform's."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine(), []
    info = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    info = {k.strip(): v.strip() for k, v in info.items()}
    flags = set(info.get("flags", "").split())
    return info.get("model name", platform.machine()), [f for f in FEATURES if f in flags]


def machine(device: str = "cpu") -> str:
    """``"<CPU model> (<features>), <n> torch threads"``, and the GPU's name on ``cuda``."""
    name, features = _cpu()
    features_text = ", ".join(features) or "none of " + "/".join(FEATURES)
    line = f"{name} ({features_text}), {torch.get_num_threads()} torch threads"
    if device.startswith("cuda") and torch.cuda.is_available():
        line += f"; {torch.cuda.get_device_name()}"
    return line
