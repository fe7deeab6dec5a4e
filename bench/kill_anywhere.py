"""``kill -9`` anywhere: a tiny-model CORY run killed with SIGKILL at random moments of its
life, resumed after each kill, must end with the metrics and weights of an uninterrupted run.

The run (``scripts/run_cory.py`` on the tests' tiny model, a checkpoint and an export every
iteration, evaluations every other iteration) is first run once uninterrupted to measure its
life ``T``, its ``metrics.jsonl`` and its exported weights. Then each round starts the run
(``--resume``), draws a moment uniformly in ``(0, T)`` from its start (start-up, rollout,
update, checkpoint write, log write, export, evaluation: wherever it lands), SIGKILLs the
process there and resumes, until ``--kills`` kills have landed; a last resume finishes the
run. A kill is *lost* if a resume fails or the finished run's rows or weights differ.

    python bench/kill_anywhere.py                  # 30 kills (minutes on 2 cores)
    python bench/kill_anywhere.py --kills 5

The last line printed is one JSON object of the figures (:data:`GOALS`).
"""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the checkout (and its bench package)

from bench import record  # noqa: E402

SCRIPT = ROOT / "scripts" / "run_cory.py"
TIMING = ("charts/rollout_s", "charts/iteration_s")

GOALS = record.goals("""
kills | SIGKILLs that landed in a live run | report
lost | kills after which a resume failed or the finished run differed | <= 0
starts | starts of the run (the first and every resume) | report
life_s | the uninterrupted run's wall time, seconds | report
""")


@dataclass
class Args:
    kills: int = 30
    """SIGKILLs to land before the run is let finish."""
    iterations: int = 6
    """Iterations of the run."""
    seed: int = 0
    """Seed of the kill moments (the run's own seed is fixed)."""
    save: bool = False
    """Write the printed object to ``bench/results/kill_anywhere/<machine kind>.json``."""


def tiny_model_folder(where: Path) -> Path:
    """The tests' tiny model and tokenizer saved as a model folder."""
    from tests.helpers.tiny import tiny_model, tiny_tokenizer

    where.mkdir(parents=True, exist_ok=True)
    tiny_model().save_pretrained(str(where))
    tiny_tokenizer().save_pretrained(str(where))
    return where


def command(model: Path, out: Path, iterations: int) -> list[str]:
    """The run: every iteration checkpointed and exported, evaluations every other one."""
    return [
        sys.executable,
        str(SCRIPT),
        *("--model", str(model), "--output-dir", str(out)),
        *("--iterations", str(iterations), "--batch-size", "4", "--mini-batch-size", "2"),
        *("--ppo-epochs", "1", "--max-new-tokens", "5", "--min-new-tokens", "3"),
        *("--eval-every", "2", "--eval-size", "4", "--checkpoint-every", "1"),
        *("--swap-period", "2", "--lora-r", "4", "--lora-alpha", "8", "--learning-rate", "1e-2"),
        "--no-progress",
        "--resume",
    ]


def finished_state(out: Path) -> tuple[list[dict], dict[str, object]]:
    """A finished run's metric rows (wall times dropped) and exported tensors by file/key."""
    from safetensors.torch import load_file

    lines = (out / "metrics.jsonl").read_text().splitlines()
    rows = [{k: v for k, v in json.loads(x).items() if k not in TIMING} for x in lines if x]
    tensors = {
        f"{p.parent.name}/{p.name}/{k}": v
        for p in sorted((out / "models").glob("*/*.safetensors"))
        for k, v in load_file(str(p)).items()
    }
    return rows, tensors


def same(a: tuple[list[dict], dict], b: tuple[list[dict], dict]) -> bool:
    """Whether two finished runs have equal rows and bit-equal weights."""
    import torch

    return (
        a[0] == b[0]
        and a[1].keys() == b[1].keys()
        and all(torch.equal(a[1][k], b[1][k]) for k in a[1])  # type: ignore[arg-type]
    )


def run_to_end(cmd: list[str]) -> tuple[int, str]:
    """``(exit code, the end of stderr)`` of ``cmd`` run to its end."""
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    return done.returncode, done.stderr.strip()[-400:]


def kill_rounds(
    cmd: list[str], out: Path, want: tuple, life: float, kills: int, rng: random.Random
) -> dict:
    """Start ``cmd`` and SIGKILL it at a moment drawn in ``(0, life)``, ``kills`` times; a
    start that finishes first is compared with ``want`` and the run starts over."""
    landed = starts = lost = 0
    moments: list[float] = []
    while landed < kills:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        starts += 1
        moment = rng.uniform(0.0, life)
        try:
            _, stderr = proc.communicate(timeout=moment)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.communicate()
            landed += 1
            moments.append(round(moment / life, 3))
            continue
        if proc.returncode != 0:
            lost += 1
            print(f"a resume failed: {stderr.strip()[-300:]}", flush=True)
        elif not same(finished_state(out), want):
            lost += 1
            print("a finished run differs from the uninterrupted one", flush=True)
        shutil.rmtree(out, ignore_errors=True)  # the kills go on from a fresh run
    code, err = run_to_end(cmd)
    starts += 1
    if code != 0:
        lost += 1
        print(f"the last resume failed: {err}", flush=True)
    elif not same(finished_state(out), want):
        lost += 1
        print("the finished run differs from the uninterrupted one", flush=True)
    return {"kills": landed, "lost": lost, "starts": starts, "kill_moments": sorted(moments)}


def main(args: Args) -> dict:
    scratch = Path(tempfile.mkdtemp(prefix="kill-anywhere-"))
    try:
        model = tiny_model_folder(scratch / "model")
        start = time.perf_counter()
        code, err = run_to_end(command(model, scratch / "reference", args.iterations))
        life = time.perf_counter() - start
        if code != 0:
            raise SystemExit(f"the uninterrupted run failed: {err}")
        want = finished_state(scratch / "reference")
        out = scratch / "killed"
        rounds = kill_rounds(
            command(model, out, args.iterations),
            out,
            want,
            life,
            args.kills,
            random.Random(args.seed),
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    metrics = {**rounds, "life_s": round(life, 2), "iterations": args.iterations}
    return record.emit(metrics, "kill_anywhere", GOALS, args.save, __doc__)


if __name__ == "__main__":
    import tyro

    main(tyro.cli(Args))
