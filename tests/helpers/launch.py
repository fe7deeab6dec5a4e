"""Starting :mod:`helpers.dp_worker` in several real processes (gloo, 1 thread each)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
TIMING = ("charts/rollout_s", "charts/iteration_s")


def launch(
    out: Path,
    *args: str,
    processes: int = 2,
    config: str | None = None,
    launcher: tuple[str, ...] = (),
) -> list[dict]:
    """Run the worker (``args``: its scenario, then its options) in ``processes`` processes,
    with ``torchrun``, or with ``accelerate launch --config_file configs/accelerate/<config>``
    (``launcher``: more of its options); what each rank saw, in rank order."""
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "tmp"  # torchelastic's log folders land here, not one per launch in /tmp
    tmp.mkdir(exist_ok=True)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "TMPDIR": str(tmp),
        "PYTHONPATH": f"{ROOT / 'tests'}{os.pathsep}{ROOT}",
    }
    worker = [str(ROOT / "tests" / "helpers" / "dp_worker.py"), *args[:1], str(out), *args[1:]]
    if config is None:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={processes}",
        ]
    else:
        cmd = [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--config_file",
            str(ROOT / "configs" / "accelerate" / config),
            "--num_processes",
            str(processes),
            "--main_process_port",
            str(free_port()),
            *launcher,
        ]
    done = subprocess.run([*cmd, *worker], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(processes)]


def free_port() -> int:
    """A TCP port free now (accelerate's launcher would otherwise use 29500 every time, and a
    launch right after another can find it still held)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def untimed(rows: list[dict]) -> list[dict]:
    """Metric rows without their wall times."""
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]
