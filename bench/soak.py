"""A long soak: a tiny-model CORY run of many iterations with a checkpoint every iteration,
watched from outside for what grows that should not.

``scripts/run_cory.py`` runs on the tests' tiny model (a checkpoint and an export every
iteration, ``--keep-checkpoints 2``, an evaluation every 25 iterations) while this script
samples the process every ``--every`` seconds: its resident memory (``VmRSS``), its open file
descriptors (``/proc/<pid>/fd``), the disk use of its checkpoints and models and of the whole
run folder, and the iterations logged so far. After a warm-up (the first tenth of the
iterations) it reports the RSS growth to the end, the growth of the descriptor count (its
fewest open at once, so that a file open mid-write is not taken for a leak), the most
checkpoints on disk at once, the disk use of checkpoints + models (bounded) and of the logs
(growing with the iterations), and whether ``metrics.jsonl`` holds exactly one training row
per iteration, in order.

    python bench/soak.py                     # 500 iterations (about ten minutes on 2 cores)
    python bench/soak.py --iterations 60

The last line printed is one JSON object of the figures (:data:`GOALS`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the checkout (and its bench package)

from agents.run.run_log import read_jsonl  # noqa: E402
from bench import record  # noqa: E402
from bench.kill_anywhere import tiny_model_folder  # noqa: E402

SCRIPT = ROOT / "scripts" / "run_cory.py"
KEEP = 2

GOALS = record.goals("""
iterations | iterations run | report
rss_growth | mean RSS of the last tenth of samples over the first tenth after warm-up, minus 1 | < 0.05
fd_growth | fewest open descriptors in the last third minus in the first third, after warm-up | <= 0
fd_range | most minus fewest open descriptors after warm-up (files open mid-write) | report
max_checkpoints | most checkpoints on disk at once (the newest lands before the oldest goes: --keep-checkpoints + 1) | <= 3
state_mib_growth | checkpoints + models on disk, end minus after warm-up, MiB | report
logs_kib_per_iteration | the rest of the run folder (logs, plots), KiB per iteration | report
rows_one_per_iteration | metrics.jsonl: one training row per iteration, in order | report
wall_s | the run's wall time, seconds | report
""")


@dataclass
class Args:
    iterations: int = 500
    """Iterations of the run."""
    every: float = 1.0
    """Seconds between samples of the process."""
    save: bool = False
    """Write the printed object to ``bench/results/soak/<machine kind>.json``."""


def command(model: Path, out: Path, iterations: int) -> list[str]:
    return [
        sys.executable,
        str(SCRIPT),
        *("--model", str(model), "--output-dir", str(out)),
        *("--iterations", str(iterations), "--batch-size", "4", "--mini-batch-size", "2"),
        *("--ppo-epochs", "1", "--max-new-tokens", "5", "--min-new-tokens", "3"),
        *("--eval-every", "25", "--eval-size", "4", "--checkpoint-every", "1"),
        *("--keep-checkpoints", str(KEEP), "--lora-r", "4", "--lora-alpha", "8"),
        "--no-progress",
    ]


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _size(path: Path) -> int:
    """Bytes of the files under ``path``; a file or folder removed mid-walk (a checkpoint
    rotated out) counts as gone, not as the run having exited."""
    total = 0
    for root, _, files in os.walk(path):  # os.walk skips a folder that vanished
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except FileNotFoundError:
                continue
    return total


def _training_rows(out: Path) -> list[dict]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a last line caught mid-write is not a row yet
        rows = read_jsonl(out / "metrics.jsonl")
    return [r for r in rows if "charts/iteration_s" in r]


def sample(pid: int, out: Path) -> dict:
    """One look at the run: memory, descriptors, disk, iterations logged."""
    ckpts = out / "checkpoints"
    state = _size(ckpts) + _size(out / "models")
    return {
        "rss_kib": _rss_kib(pid),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "checkpoints": len([p for p in ckpts.glob("iter_*") if p.is_dir()])
        if ckpts.exists()
        else 0,
        "state_bytes": state,
        "logs_bytes": _size(out) - state,
        "iteration": len(_training_rows(out)),
    }


def watch(cmd: list[str], out: Path, every: float) -> tuple[list[dict], float]:
    """Run ``cmd`` and sample it until it exits: ``(samples, wall seconds)``."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    samples = []
    while proc.poll() is None:
        try:
            samples.append(sample(proc.pid, out))
        except (FileNotFoundError, ProcessLookupError):
            break  # it exited between the poll and the look
        time.sleep(every)
    _, stderr = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"the soak run failed: {stderr.strip()[-400:]}")
    return samples, time.perf_counter() - start


def figures(samples: list[dict], out: Path, iterations: int, wall: float) -> dict:
    """The soak's figures from its samples (after warm-up: a tenth of the iterations)."""
    warm = [s for s in samples if s["iteration"] >= max(1, iterations // 10)]
    if len(warm) < 2:
        raise SystemExit("too few samples after warm-up: run more iterations or sample more often")
    first, last = warm[0], warm[-1]
    tenth, third = max(1, len(warm) // 10), max(1, len(warm) // 3)
    rss_start = sum(s["rss_kib"] for s in warm[:tenth]) / tenth
    rss_end = sum(s["rss_kib"] for s in warm[-tenth:]) / tenth
    rows = _training_rows(out)
    logs_growth = last["logs_bytes"] - first["logs_bytes"]
    return {
        "iterations": iterations,
        "samples": len(warm),
        "rss_mib_after_warmup": round(rss_start / 1024, 1),
        "rss_mib_end": round(rss_end / 1024, 1),
        "rss_growth": round(rss_end / rss_start - 1, 4),
        "fd_growth": min(s["fds"] for s in warm[-third:]) - min(s["fds"] for s in warm[:third]),
        "fd_range": max(s["fds"] for s in warm) - min(s["fds"] for s in warm),
        "fds": min(s["fds"] for s in warm),
        "max_checkpoints": max(s["checkpoints"] for s in samples),
        "state_mib_growth": round((last["state_bytes"] - first["state_bytes"]) / 2**20, 3),
        "logs_kib_per_iteration": round(
            logs_growth / 1024 / max(1, last["iteration"] - first["iteration"]), 2
        ),
        "rows_one_per_iteration": [r["iteration"] for r in rows] == list(range(iterations)),
        "wall_s": round(wall, 1),
    }


def main(args: Args) -> dict:
    scratch = Path(tempfile.mkdtemp(prefix="soak-"))
    try:
        model = tiny_model_folder(scratch / "model")
        out = scratch / "run"
        samples, wall = watch(command(model, out, args.iterations), out, args.every)
        metrics = figures(samples, out, args.iterations, wall)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return record.emit(metrics, "soak", GOALS, args.save, __doc__)


if __name__ == "__main__":
    import tyro

    main(tyro.cli(Args))
