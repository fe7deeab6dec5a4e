"""The machine a run or a bench ran on: one line printed with its figures and a short slug
naming its kind. CPUs sold as the same "2-core machine" differ in their matmul kernels
(AMX, AVX-512 BF16, AVX-512, AVX2) and so in speed by several times, so a figure without
its machine cannot be compared with another; :func:`machine_kind` names the kind a result
file is kept under (``bench/results/<bench>/<kind>.json``) and each sitting of a run
records in its ``events.jsonl``."""

from __future__ import annotations

import platform
import re
from pathlib import Path

import torch

__all__ = ["machine", "machine_kind"]

FEATURES = ("amx_bf16", "avx512_bf16", "avx512f", "avx2")
"""The CPU features that decide which matmul kernels run (AMX and AVX-512 BF16: bf16),
best first."""
FEATURE_SLUGS = {
    "amx_bf16": "amx",
    "avx512_bf16": "avx512-bf16",
    "avx512f": "avx512",
    "avx2": "avx2",
}
"""How the best of :data:`FEATURES` a CPU has appears in its machine kind."""


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


def _on_gpu(device: str) -> bool:
    return device.startswith("cuda") and torch.cuda.is_available()


def machine(device: str = "cpu") -> str:
    """``"<CPU model> (<features>), <n> torch threads"``, and the GPU's name on ``cuda``."""
    name, features = _cpu()
    features_text = ", ".join(features) or "none of " + "/".join(FEATURES)
    line = f"{name} ({features_text}), {torch.get_num_threads()} torch threads"
    if _on_gpu(device):
        line += f"; {torch.cuda.get_device_name()}"
    return line


def slug(text: str) -> str:
    """Lower case, runs of anything but letters and digits as one ``-``."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def machine_kind(device: str = "cpu") -> str:
    """A short stable name of the machine kind: the GPU's name on ``cuda`` (``nvidia-h200``),
    else the CPU model, its best matmul feature and the torch threads
    (``amd-epyc-avx512-bf16-2t``)."""
    if _on_gpu(device):
        return slug(torch.cuda.get_device_name())
    name, features = _cpu()
    best = FEATURE_SLUGS[features[0]] if features else "generic"
    return f"{slug(name)}-{best}-{torch.get_num_threads()}t"
