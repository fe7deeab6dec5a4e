"""CORY in bf16 next to CORY in fp32: iteration time and peak memory, in one run.

    python bench/dtype.py                 # SmolLM2-135M on CPU (a few minutes)
    python bench/dtype.py --model tiny    # the tests' tiny model (seconds)

The default compute dtype on a CPU with bf16 matmul instructions is bf16, because CORY's
reward-KL frontier in bf16 lies inside fp32's band over seeds (``docs/results.md``). This
bench gives the cost side of that choice at :mod:`bench.iteration`'s settings: the two
trainers (LoRA, each on its own copy of the model loaded in its dtype) step in turn, so
machine noise hits both alike, and each one's peak memory is measured in a fresh
subprocess (:func:`bench.iteration.peak`). On a CPU that emulates bf16 the bf16 trainer is
not run. The goals are :data:`GOALS` (rendered in ``docs/benchmarks.md#dtype``).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the checkout and its tests.helpers

from bench import iteration, record  # noqa: E402

GOALS = record.goals("""
bf16_over_fp32_iteration | one CORY iteration (LoRA) in bf16 / in fp32 | report
bf16_iteration_s | one CORY iteration in bf16, seconds | report
fp32_iteration_s | one CORY iteration in fp32, seconds | report
peak_mem_bf16_over_fp32 | peak memory, CORY in bf16 / in fp32 | report
peak_mb_bf16 | peak memory of CORY in bf16, MB | report
peak_mb_fp32 | peak memory of CORY in fp32, MB | report
""")
"""The figures the benchmarks page shows (no goal: the dtype is chosen by learning)."""


@dataclass
class Args:
    model: str = "smollm2-135m-instruct"
    """Model id/alias, ``tiny`` (the tests' tiny model), or ``random:<shape>``."""
    batch_size: int = 8
    """Queries per iteration."""
    new_tokens: int = 8
    """Answer length per turn (fixed, so both dtypes generate the same number of tokens)."""
    iterations: int = 3
    """Timed iterations per trainer (after one warm-up iteration each)."""
    device: str = "cpu"
    """cpu or cuda."""
    save: bool = False
    """Write the printed object, with the command, machine, date and commit, to
    ``bench/results/dtype/<machine kind>.json`` (then: ``python bench/render.py``)."""


def main(args: Args) -> dict:
    from agents.cory import CoryTrainer
    from agents.policy.loading import computes_natively
    from bench.machine import machine

    if not computes_natively("bf16", args.device):
        raise SystemExit(f"this {args.device} emulates bf16: the comparison would time emulation")
    runs = {
        dtype: iteration.Args(
            model=args.model,
            batch_size=args.batch_size,
            new_tokens=args.new_tokens,
            iterations=args.iterations,
            device=args.device,
            dtype=dtype,
        )
        for dtype in ("fp32", "bf16")
    }
    trainers = {}
    for dtype, run in runs.items():
        model, tokenizer = iteration.load(run)
        cfg = iteration.config(run, out=f"/tmp/cory-bench-dtype-{dtype}")
        trainers[dtype] = CoryTrainer(cfg, model=model, tokenizer=tokenizer)
    times = iteration.time_steps(trainers, runs["fp32"])
    peaks = {dtype: iteration.peak(run, "cory-lora")["peak_bytes"] for dtype, run in runs.items()}
    metrics = {
        "model": args.model,
        "device": args.device,
        "batch_size": args.batch_size,
        "new_tokens": args.new_tokens,
        **{f"{d}_iteration_s": t for d, t in times.items()},
        "bf16_over_fp32_iteration": times["bf16"] / times["fp32"],
        **{f"peak_mb_{d}": round(b / 2**20, 1) for d, b in peaks.items()},
        "peak_mem_bf16_over_fp32": peaks["bf16"] / peaks["fp32"],
        "machine": machine(args.device),
    }
    print(
        f"model {args.model} on {args.device} ({metrics['machine']}), batch {args.batch_size}, "
        f"{args.new_tokens} new tokens\n"
        f"  CORY iteration: bf16 {times['bf16']:.3f} s, fp32 {times['fp32']:.3f} s, "
        f"ratio {metrics['bf16_over_fp32_iteration']:.2f}\n"
        f"  peak memory: bf16 {metrics['peak_mb_bf16']} MB, fp32 {metrics['peak_mb_fp32']} MB, "
        f"ratio {metrics['peak_mem_bf16_over_fp32']:.2f}"
    )
    return record.emit(metrics, "dtype", GOALS, args.save, __doc__, args.device)


if __name__ == "__main__":
    import tyro

    main(tyro.cli(Args))
