"""One run, one process against several: the wall time and each process's memory of
``scripts/run_cory.py`` under each launcher.

Each case runs ``scripts/run_cory.py --iterations N --no-progress`` as a user would (plain
``python``, ``accelerate launch --multi_gpu``, or ``accelerate launch --config_file
configs/accelerate/<config>``), one case at a time, and reports the world size the run
recorded (``config.json``'s ``num_processes``), its wall time, each iteration's time
(``charts/iteration_s``) and the peak resident memory of **each** process: every process is
started through this file's ``--probe`` mode, which runs the script in-process and writes
its own ``ru_maxrss`` at exit. The last line printed is one JSON object of the figures; the
ones the benchmarks page shows are :func:`goals` (rendered in
``docs/benchmarks.md#processes``).

    python bench/processes.py                       # every case (minutes on 2 cores)
    python bench/processes.py --cases lora lora_ddp # LoRA: one process, then two (gloo)
    python bench/processes.py --cases full full_fsdp --iterations 2
    python bench/processes.py --cases full_fsdp full_fsdp_every_reader full_fsdp_sharded_checkpoints

Launched processes get ``OMP_NUM_THREADS=1`` (two of them share a 2-core machine); the
single-process cases keep torch's default threads. Timings are this machine's and noisy:
compare cases of one run, never across machines.
"""

from __future__ import annotations

import json
import os
import resource
import runpy
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the checkout (and its bench package)
SCRIPT = ROOT / "scripts" / "run_cory.py"
ACCELERATE = [sys.executable, "-m", "accelerate.commands.launch"]

CASES: dict[str, tuple[list[str], list[str], int]] = {
    # name -> (launcher, run flags, processes)
    "lora": ([], [], 1),
    "lora_ddp": ([*ACCELERATE, "--multi_gpu", "--num_processes", "2"], [], 2),
    "lora_cpu_ddp": (
        [*ACCELERATE, "--config_file", str(ROOT / "configs/accelerate/cpu_ddp.yaml")],
        [],
        2,
    ),
    "full": ([], ["--mode", "full"], 1),
    "full_fsdp": (
        [*ACCELERATE, "--config_file", str(ROOT / "configs/accelerate/cpu_fsdp.yaml")],
        ["--mode", "full"],
        2,
    ),
    # the same, every process reading the whole weights (the config's CPU-RAM-efficient loading off)
    "full_fsdp_every_reader": (
        [
            *ACCELERATE,
            "--config_file",
            str(ROOT / "configs/accelerate/cpu_fsdp.yaml"),
            "--fsdp_cpu_ram_efficient_loading",
            "false",
        ],
        ["--mode", "full"],
        2,
    ),
    # the same, each process checkpointing its own shards (nothing gathered for the checkpoints)
    "full_fsdp_sharded_checkpoints": (
        [
            *ACCELERATE,
            "--config_file",
            str(ROOT / "configs/accelerate/cpu_fsdp.yaml"),
            "--fsdp_state_dict_type",
            "SHARDED_STATE_DICT",
        ],
        ["--mode", "full"],
        2,
    ),
}
EXTRA_CASES = ("full_fsdp_every_reader", "full_fsdp_sharded_checkpoints")  # not run by default


@dataclass
class Args:
    cases: list[str] = field(default_factory=lambda: [c for c in CASES if c not in EXTRA_CASES])
    """Which cases to run, in order (of: lora, lora_ddp, lora_cpu_ddp, full, full_fsdp, and
    the FSDP variants full_fsdp_every_reader, full_fsdp_sharded_checkpoints)."""
    iterations: int = 2
    """Iterations of each run (the default run's evaluations included)."""
    extra: list[str] = field(default_factory=list)
    """More flags for every run (e.g. ``--model random:gpt2-large``)."""
    save: bool = False
    """Write the printed object, with the command, machine, date and commit, to
    ``bench/results/processes/<machine kind>.json`` (then: ``python bench/render.py``)."""


RATIOS = (("lora_ddp", "lora"), ("lora_cpu_ddp", "lora"), ("full_fsdp", "full"))
"""``(several processes, one process)``: the pairs whose wall time and peak are compared."""


def goals(cases: list[str]) -> list[tuple[str, str, str]]:
    """The figures the benchmarks page shows for ``cases`` (reported: no bound)."""
    out = []
    for case in cases:
        out += [
            (f"{case}.wall_s", f"{case}: the run's wall time, seconds", "report"),
            (f"{case}.peak_gib", f"{case}: peak RSS of each process, GiB", "report"),
        ]
    return out + [
        (f"{many}/{one}_wall", f"wall time, {many} / {one}", "report")
        for many, one in RATIOS
        if many in cases and one in cases
    ]


def _peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


def probe(folder: str, argv: list[str]) -> None:
    """Run the script in this process; at exit (error or not) its peak RSS goes to
    ``folder/rank<RANK>.json``, with the peak once its agents were built (models loaded,
    copied and, under FSDP, sharded: before the first rollout)."""
    import agents.run.setup as setup

    sys.argv = [str(SCRIPT), *argv]
    code, built = 0, None
    build = setup.build_agents

    def recording_build(*a, **kw):  # the trainers import it from setup when the script starts
        nonlocal built
        made = build(*a, **kw)
        built = _peak_bytes()
        return made

    setup.build_agents = recording_build
    try:
        runpy.run_path(str(SCRIPT), run_name="__main__")
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    finally:
        rank = os.environ.get("RANK", "0")
        Path(folder, f"rank{rank}.json").write_text(
            json.dumps({"peak_bytes": _peak_bytes(), "built_bytes": built, "exit": code})
        )
    raise SystemExit(code)


def run_to_end(
    cmd: list[str], env: dict[str, str], name: str
) -> tuple[subprocess.CompletedProcess, float]:
    """``cmd`` run from the checkout to its end, its output captured, and its wall seconds;
    a failure exits with the ends of its output."""
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(
            f"{name} failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
        )
    return done, wall


def metric_rows(run_folder: Path) -> list[dict]:
    """The rows of a run folder's ``metrics.jsonl``."""
    lines = (run_folder / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def run_case(name: str, args: Args, scratch: Path) -> dict:
    """One case run to the end; its recorded world size, wall time, iteration times and
    per-process peaks."""
    launcher, flags, processes = CASES[name]
    out, peaks = scratch / name / "run", scratch / name / "peaks"
    peaks.mkdir(parents=True)
    tmp = scratch / name / "tmp"  # the launcher's log folders land here, removed with the rest
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp)}
    if launcher:
        env["OMP_NUM_THREADS"] = "1"
    cmd = [
        *(launcher or [sys.executable]),
        __file__,
        "--probe",
        str(peaks),
        "--",
        "--iterations",
        str(args.iterations),
        "--no-progress",
        "--output-dir",
        str(out),
        *flags,
        *args.extra,
    ]
    done, wall = run_to_end(cmd, env, name)
    config = json.loads((out / "config.json").read_text())
    rows = metric_rows(out)
    gib = 2**30
    ranks = sorted(peaks.glob("rank*.json"), key=lambda p: int(p.stem[4:]))
    return {
        "processes_asked": processes,
        "num_processes": config.get("num_processes", 1),
        "wall_s": wall,
        "iteration_s": [r["charts/iteration_s"] for r in rows if "charts/iteration_s" in r],
        "peak_gib": [json.loads(p.read_text())["peak_bytes"] / gib for p in ranks],
        "built_gib": [json.loads(p.read_text())["built_bytes"] / gib for p in ranks],
    }


def report(name: str, m: dict) -> str:
    its = " / ".join(f"{t:.1f}" for t in m["iteration_s"])
    peaks = ", ".join(f"rank {r} {g:.2f}" for r, g in enumerate(m["peak_gib"]))
    built = ", ".join(f"rank {r} {g:.2f}" for r, g in enumerate(m["built_gib"]))
    return (
        f"{name}: {m['num_processes']} process(es) recorded ({m['processes_asked']} launched), "
        f"wall {m['wall_s']:.1f} s, iterations {its} s, peak RSS GiB: {peaks} "
        f"(once the agents were built: {built})"
    )


def main(args: Args) -> dict:
    unknown = [c for c in args.cases if c not in CASES]
    if unknown:
        raise SystemExit(f"unknown case(s) {unknown}: choose from {list(CASES)}")
    scratch = Path(tempfile.mkdtemp(prefix="cory-bench-processes-"))
    out: dict = {"iterations": args.iterations, "extra": args.extra}
    try:
        for name in args.cases:
            m = run_case(name, args, scratch)
            print(report(name, m), flush=True)
            out[name] = m
        for many, one in RATIOS:
            if many in out and one in out:
                out[f"{many}/{one}_wall"] = out[many]["wall_s"] / out[one]["wall_s"]
                out[f"{many}/{one}_peak_rank1"] = (
                    out[many]["peak_gib"][-1] / out[one]["peak_gib"][0]
                )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    from bench import record

    return record.emit(out, "processes", goals(args.cases), args.save, __doc__)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--probe"]:  # internal (each launched process): FOLDER -- SCRIPT FLAGS
        probe(sys.argv[2], sys.argv[4:])
    import tyro

    main(tyro.cli(Args))
