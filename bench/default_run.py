"""The README's main job timed as a user runs it: ``python scripts/run_cory.py`` with its
defaults (SmolLM2-135M-Instruct, ``sentiment``, LoRA), its run folder in a temporary
directory. Reports the wall time of the whole process (start-up, model loading, training,
evaluations, checkpoints, plots), split by the run's own metrics into training iterations
(rollout and update) and the rest, and the end-of-run evaluation it prints.

    python bench/default_run.py                  # the default job (minutes on 2 CPU cores)

The last line printed is one JSON object of the figures; the goals are :data:`GOALS`
(rendered in ``docs/benchmarks.md#default_run``).
"""

from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the checkout (and its bench package)

from bench import record  # noqa: E402
from bench.processes import metric_rows, run_to_end  # noqa: E402

SCRIPT = ROOT / "scripts" / "run_cory.py"

GOALS = record.goals("""
wall_s | the whole job, seconds from the command to its exit | report
wall_min | the same, minutes | report
iterations | training iterations run | report
training_s | the iterations' time (rollout + update) | report
rollout_s | generation through the env, all iterations | report
update_s | the learners' updates, all iterations | report
other_s | start-up, model loading, evaluations, checkpoints, plots | report
mean_iteration_s | one iteration | report
eval_last.model_a.reward | model A's reward evaluated alone at the end | report
eval_last.model_b.reward | model B's reward evaluated alone at the end | report
""")
"""The figures the benchmarks page shows (none has a bound: the job's time is reported)."""


@dataclass
class Args:
    extra: list[str] = field(default_factory=list)
    """More flags for the run (none: the default job)."""
    save: bool = False
    """Write the printed object, with the command, machine, date and commit, to
    ``bench/results/default_run/<machine kind>.json`` (then: ``python bench/render.py``)."""


def evaluations(rows: list[dict]) -> dict[str, dict[str, dict[str, float]]]:
    """``{"eval_first": {model: {"reward", "kl"}}, "eval_last": ...}``: the first and the last
    evaluation of each model, the numbers the run prints at its end."""
    evals = [r for r in rows if any(k.startswith("eval/") for k in r)]
    if not evals:
        return {}

    def models(row: dict) -> dict[str, dict[str, float]]:
        names = sorted({k.split("/")[1] for k in row if k.startswith("eval/")})
        return {
            m: {s: row[f"eval/{m}/{s}"] for s in ("reward", "kl") if f"eval/{m}/{s}" in row}
            for m in names
        }

    return {"eval_first": models(evals[0]), "eval_last": models(evals[-1])}


def figures(rows: list[dict], wall_s: float) -> dict[str, float]:
    """The wall time split by the run's metric rows (``charts/iteration_s``, ``charts/rollout_s``)."""
    its = [r["charts/iteration_s"] for r in rows if "charts/iteration_s" in r]
    training, rollout = sum(its), sum(r.get("charts/rollout_s", 0.0) for r in rows)
    return {
        "wall_s": wall_s,
        "wall_min": wall_s / 60,
        "iterations": len(its),
        "training_s": training,
        "rollout_s": rollout,
        "update_s": training - rollout,
        "other_s": wall_s - training,
        "mean_iteration_s": training / len(its) if its else 0.0,
    }


def main(args: Args) -> dict:
    from bench.machine import machine

    host = machine()
    print(f"machine: {host}", flush=True)
    with tempfile.TemporaryDirectory(prefix="cory-bench-default-") as tmp:
        out = Path(tmp) / "run"
        cmd = [sys.executable, str(SCRIPT), "--output-dir", str(out), *args.extra]
        # this checkout's packages, as in a user's own checkout (an editable install elsewhere loses)
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        }
        done, wall = run_to_end(cmd, env, "the run")
        rows = metric_rows(out)
    printed = done.stdout.strip().splitlines()
    tail = printed[
        next(
            (i for i, line in enumerate(printed) if line.startswith("evaluation alone")),
            len(printed),
        ) :
    ]
    tail = [line for line in tail if not line.startswith("run folder:")]  # a folder now removed
    print("\n".join(tail))
    metrics = {
        "machine": host,
        "extra": args.extra,
        **figures(rows, wall),
        **evaluations(rows),
        "printed": tail,
    }
    print(
        f"wall {wall:.1f} s ({wall / 60:.1f} min), split: "
        + ", ".join(
            f"{k} {metrics[k]:.1f}" for k in ("training_s", "rollout_s", "update_s", "other_s")
        )
    )
    return record.emit(metrics, "default_run", GOALS, args.save, __doc__)


if __name__ == "__main__":
    import tyro

    main(tyro.cli(Args))
