"""Run a grid of runs from one command: methods x seeds, each in its own run folder under
one sweep folder, one after the other or ``--parallel N`` at a time. A finished run is
skipped, an interrupted one resumed (``--resume``); a progress line per run. ``--print``
writes the commands instead (for a cluster scheduler). Any other flags go to every run.

    python scripts/sweep.py runs/sweep --methods cory ppo --seeds 0 1 2
    python scripts/sweep.py runs/sweep --methods cory cory-no-kt --seeds 0 --iterations 12
    python scripts/sweep.py runs/sweep --methods cory ppo ppo-2x-batch cory-bf16 --no-adap-kl-ctrl
    python scripts/sweep.py runs/sweep --methods cory ppo --print > jobs.txt
    python scripts/sweep.py runs/sweep --log-with tensorboard wandb   # wandb group: "sweep"
    python scripts/sweep.py runs/custom --methods cory ppo --task prompts \
        --task-path examples/custom_task/prompts.jsonl --reward examples/custom_task/my_rewards.py:kindness

The layout ``SWEEP/<method>/seed_<s>/`` is what ``scripts/report.py SWEEP`` reads. Each run
starts in the folder the sweep was started in, so relative paths (the sweep folder,
``--task-path``, a ``path/to/file.py:function`` reward or task) and modules there
(``--reward my_rewards:kindness``) mean what they mean to the sweep's own command line.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORY, PPO = "scripts/run_cory.py", "scripts/run_ppo.py"
DOUBLE_BATCH = "--batch-size=2x"
"""A method flag the sweep replaces with twice the run's batch size (``--batch-size`` among
the sweep's flags, else the default)."""
METHODS: dict[str, tuple[str, tuple[str, ...]]] = {
    "cory": (CORY, ()),
    "ppo": (PPO, ()),
    "ppo-2x-batch": (PPO, (DOUBLE_BATCH,)),
    "cory-bf16": (CORY, ("--dtype", "bf16")),
    "ppo-bf16": (PPO, ("--dtype", "bf16")),
    "cory-no-kt": (CORY, ("--no-knowledge-transfer",)),
    "cory-no-rex": (CORY, ("--no-role-exchange",)),
    "cory-independent": (CORY, ("--reward-mode", "independent")),
    "cory-rloo": (CORY, ("--learner", "rloo")),
    "rloo": (PPO, ("--learner", "rloo")),
    "cory-grpo": (CORY, ("--learner", "grpo")),
    "grpo": (PPO, ("--learner", "grpo")),
}
"""Method name -> (script, its flags): CORY, the PPO control (and at twice the batch: as many
answers sampled and trained on per iteration as CORY's two models), CORY's ablations (no
knowledge transfer, no role exchange, independent rewards), the critic-free learners in both,
and bf16 arms (refused where the CPU emulates bf16). A method's flags come after the sweep's
own, so they win: ``--dtype fp32`` for the sweep and ``cory-bf16`` still runs in bf16."""
BF16 = ("cory-bf16", "ppo-bf16")
DONE = ".sweep-done"
"""Written into a run folder when its run exited cleanly: the sweep skips it next time."""


def bf16_is_native(extra: list[str]) -> bool:
    """Whether the runs' device (``--device`` among the sweep's flags, else the CPU) computes
    bf16 natively."""
    from agents.policy import loading

    device = extra[extra.index("--device") + 1] if "--device" in extra[:-1] else "cpu"
    return loading.computes_natively("bf16", device)


def run_folder(sweep: Path, method: str, seed: int) -> Path:
    return sweep / method / f"seed_{seed}"


def batch_size(extra: list[str]) -> int:
    """The ``--batch-size`` among the sweep's flags (the last one), else the default."""
    from agents.run.config import TrainConfig

    size = TrainConfig.batch_size
    for i, flag in enumerate(extra):
        if flag == "--batch-size" and i + 1 < len(extra):
            size = int(extra[i + 1])
        elif flag.startswith("--batch-size="):
            size = int(flag.split("=", 1)[1])
    return size


def method_flags(method: str, extra: list[str]) -> list[str]:
    """The method's own flags, :data:`DOUBLE_BATCH` replaced by twice the run's batch."""
    out = []
    for flag in METHODS[method][1]:
        out += ["--batch-size", str(2 * batch_size(extra))] if flag == DOUBLE_BATCH else [flag]
    return out


def command(sweep: Path, method: str, seed: int, extra: list[str]) -> list[str]:
    """The run's command line; ``--resume`` when its folder holds an unfinished run."""
    script = METHODS[method][0]
    folder = run_folder(sweep, method, seed)
    resume = ["--resume"] if folder.is_dir() and not (folder / DONE).exists() else []
    group = (
        ["--wandb-group", sweep.resolve().name]
        if "wandb" in extra and "--wandb-group" not in extra
        else []
    )
    return [
        sys.executable,
        str(ROOT / script),
        "--seed",
        str(seed),
        "--output-dir",
        str(folder),
        "--no-progress",
        *extra,
        *method_flags(method, extra),
        *group,
        *resume,
    ]


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sweep", type=Path, help="the sweep folder")
    p.add_argument("--methods", nargs="+", default=["cory", "ppo"], choices=sorted(METHODS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--parallel", type=int, default=1, help="runs at a time")
    p.add_argument(
        "--print", dest="print_only", action="store_true", help="print the commands only"
    )
    args, extra = p.parse_known_args(argv)
    jobs = [(m, s) for m in args.methods for s in args.seeds]
    emulated = [m for m in args.methods if m in BF16 and not bf16_is_native(extra)]
    if emulated and not args.print_only:
        p.error(
            f"{', '.join(emulated)}: this machine emulates bf16 (a CPU without AMX or AVX-512 "
            "BF16, or a GPU without bf16), "
            "so a bf16 arm here would measure the emulation; run it where bf16 is native"
        )
    if args.print_only:
        for m, s in jobs:
            print(shlex.join(command(args.sweep, m, s, extra)))
        return []
    results, running, t0 = [], [], time.perf_counter()
    todo = []
    for i, (m, s) in enumerate(jobs, start=1):
        if (run_folder(args.sweep, m, s) / DONE).exists():
            print(f"[{i}/{len(jobs)}] {m} seed {s}: finished before, skipped", flush=True)
            results.append({"method": m, "seed": s, "status": "skipped"})
        else:
            todo.append((i, m, s))
    while todo or running:
        while todo and len(running) < max(1, args.parallel):
            i, m, s = todo.pop(0)
            folder = run_folder(args.sweep, m, s)
            folder.parent.mkdir(parents=True, exist_ok=True)
            cmd = command(args.sweep, m, s, extra)
            log = (folder.parent / f"seed_{s}.log").open("w")
            running.append(
                (
                    i,
                    m,
                    s,
                    subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT),
                    time.perf_counter(),
                    "--resume" in cmd,
                    log,
                )
            )
        for job in list(running):
            i, m, s, proc, started, resumed, log = job
            if proc.poll() is None:
                continue
            running.remove(job)
            log.close()
            folder = run_folder(args.sweep, m, s)
            ok = proc.returncode == 0
            if ok:
                (folder / DONE).write_text("ok\n")
            how = "resumed, " if resumed else ""
            status = (
                "done"
                if ok
                else f"failed (exit {proc.returncode}; see {folder.parent / f'seed_{s}.log'})"
            )
            print(
                f"[{i}/{len(jobs)}] {m} seed {s}: {how}{status} in {time.perf_counter() - started:.1f} s",
                flush=True,
            )
            results.append(
                {
                    "method": m,
                    "seed": s,
                    "status": "done" if ok else "failed",
                    "resumed": resumed,
                    "returncode": proc.returncode,
                }
            )
        time.sleep(0.2)
    print(f"sweep {args.sweep}: {len(jobs)} runs in {time.perf_counter() - t0:.1f} s")
    return results


if __name__ == "__main__":
    outcome = main()
    sys.exit(1 if any(r["status"] == "failed" for r in outcome) else 0)
