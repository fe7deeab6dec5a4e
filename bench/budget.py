"""What the observers' token budget costs: one observer update of a CORY iteration, timed
whole, cut to the pioneer's tokens (``--observer-token-budget``), and cut without the fused
first piece, in turns, in one process, each from the same weights and learner state (paired,
so the machine's drift hits every arm alike); and why: one forward + backward of the
observer's rows timed at several sizes and fitted to ``fixed + per_token * tokens``, the
fixed part being what each extra micro-batch adds.

    python bench/budget.py                                   # SmolLM2-135M, the default sentiment settings
    python bench/budget.py --imdb ../shared/data/imdb/reviews_2000.csv   # the official script's settings
    python bench/budget.py --model tiny --rounds 1           # the tests' tiny model (seconds)

The last line printed is one JSON object of the metrics; the figures the benchmarks page
shows are :data:`GOALS` (rendered in ``docs/benchmarks.md#budget``).
"""

from __future__ import annotations

import atexit
import dataclasses
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the checkout and its tests.helpers

from agents.rl.optimise import micro_batches  # noqa: E402
from bench import record  # noqa: E402
from bench.machine import machine  # noqa: E402
from bench.update import MATCHED  # noqa: E402

ARMS = ("whole", "cut", "cut_unfused")
"""The observer's mini-batches whole; cut to the pioneer's tokens; cut, with the first piece's
forward not fused into the old-log-prob pass (what the fusion saves)."""
GOALS = record.goals("""
update_s.whole | the observer's update, mini-batches whole, seconds | report
over_whole.cut | cut to the pioneer's tokens / whole | report
over_whole.cut_unfused | cut, the first piece's forward not fused, / whole | report
budget_tokens | the budget: the pioneer's padded tokens per mini-batch | report
observer_padded_tokens_per_mini_batch | the observer's padded tokens per mini-batch | report
pieces_per_mini_batch | pieces each observer mini-batch is cut into | report
piece_fit.fixed_s | forward + backward: the fixed seconds each extra piece adds | report
piece_fit.per_token_s | forward + backward: seconds per token | report
piece_fit_peft.fixed_s | the same with peft's LoRA layers (not fused): fixed seconds | report
fixed_fused_over_peft | the fixed seconds, LoRA layers fused / peft's | report
""")
"""The figures the benchmarks page shows (reported: the budget is an option, not a goal)."""


@dataclass
class Args:
    model: str = "smollm2-135m-instruct"
    """Model id/alias, ``tiny`` (the tests' tiny model), or ``random:<shape>``."""
    imdb: str | None = None
    """A local IMDB CSV: the official script's settings on it (:data:`bench.update.MATCHED`);
    else the default ``sentiment`` settings."""
    rounds: int = 4
    """Paired rounds: each arm timed once per round, the order turning each round."""
    sizes: tuple[int, ...] = (1, 2, 4, 8, 16)
    """Rows of the observer's batch whose forward + backward the fit times."""
    save: bool = False
    """Write the printed object, with the command, machine, date and commit, to
    ``bench/results/budget/<machine kind>.json`` (then: ``python bench/render.py``)."""


def scratch_folder(prefix: str) -> str:
    """A run folder of this process's own (the run lock refuses a shared one), removed at exit."""
    folder = tempfile.mkdtemp(prefix=prefix)
    atexit.register(shutil.rmtree, folder, True)
    return folder


def captured_updates(args: Args) -> list[tuple]:
    """``[(learner, batch, scores, budget)]``: the pioneer's and the observer's
    updates of a CORY iteration after a warm-up one (the observer's with its budget)."""
    from agents.cory import CoryTrainer
    from agents.run.config import TrainConfig
    from bench.models import load_bench_model

    model, tokenizer = load_bench_model(args.model)
    task = (
        {"task": "imdb", "task_path": args.imdb, "reward": "vader", **MATCHED}
        if args.imdb
        else {"task": "sentiment"}
    )
    cfg = TrainConfig(
        model=args.model,
        iterations=3,
        eval_every=0,
        progress=False,
        observer_token_budget=True,
        output_dir=scratch_folder("cory-bench-budget-"),
        **task,
    )
    torch.manual_seed(0)
    trainer = CoryTrainer(cfg, model=model, tokenizer=tokenizer)
    caught = []
    for learner in trainer.learners.values():

        def capture(batch, scores, *rest, learner=learner, update=learner.update, **options):
            budget = learner.config.within_budget(options.get("token_budget"))
            caught.append((learner, batch, scores, budget.max_tokens_per_microbatch))
            return update(batch, scores, *rest, **options)

        learner.update = capture
    trainer.step(0)
    caught.clear()
    trainer.step(1)
    return caught


def paired(learner, batch, scores, budget: int, rounds: int) -> dict[str, list[float]]:
    """Seconds of ``learner``'s update on ``batch`` per arm (:data:`ARMS`), each from the
    weights and state it had before."""
    weights = [p.detach().clone() for p in learner.agent.trainable_parameters()]
    state, config, fuse = learner.state_dict(), learner.config, learner.fuse_first_forward
    update = type(learner).update
    times: dict[str, list[float]] = {arm: [] for arm in ARMS}
    for r in range(rounds):
        for arm in ARMS if r % 2 == 0 else ARMS[::-1]:
            with torch.no_grad():
                for p, w in zip(learner.agent.trainable_parameters(), weights, strict=True):
                    p.copy_(w)
            learner.load_state_dict(state)
            learner.config = dataclasses.replace(
                config, max_tokens_per_microbatch=None if arm == "whole" else budget
            )
            learner.fuse_first_forward = arm != "cut_unfused"
            t0 = time.perf_counter()
            update(learner, batch, scores)
            times[arm].append(time.perf_counter() - t0)
    learner.config, learner.fuse_first_forward = config, fuse
    return times


def piece_fits(agent, batch, sizes: tuple[int, ...], repeats: int = 5) -> dict[str, dict]:
    """One forward + backward of the first ``n`` rows of ``batch`` for each ``n`` of
    ``sizes``, the agent's LoRA layers fused (``fused``, the default) and peft's own
    (``peft``) in turns, each the best of ``repeats``, fitted by least squares to
    ``fixed_s + per_token_s * tokens``."""
    rows = sorted({min(s, len(batch)) for s in sizes})
    arms = {"fused": True, "peft": False}
    seconds: dict[str, list[float]] = {arm: [] for arm in arms}
    tokens = []
    for n in rows:
        sub = batch.subset(torch.arange(n))
        best = dict.fromkeys(arms, float("inf"))
        for r in range(repeats):
            for arm in arms if r % 2 == 0 else reversed(list(arms)):
                agent.fast_lora = arms[arm]
                t0 = time.perf_counter()
                backward_of(agent, sub)
                best[arm] = min(best[arm], time.perf_counter() - t0)
                agent.model.zero_grad(set_to_none=True)
        agent.fast_lora = True
        tokens.append(int(sub.attention_mask.sum()))
        for arm in arms:
            seconds[arm].append(best[arm])
    return {arm: _fit(rows, tokens, seconds[arm]) for arm in arms}


def backward_of(agent, batch) -> None:
    """One forward + backward of ``batch`` (the loss: its log-probs and values summed)."""
    out = agent.forward(batch)
    loss = out.logprobs.sum() + (out.values.sum() if out.values is not None else 0.0)
    loss.backward()


def _fit(rows: list[int], tokens: list[int], seconds: list[float]) -> dict:
    fixed = slope = float("nan")
    if len(tokens) >= 2:
        slope, fixed = statistics.linear_regression(tokens, seconds)
    return {
        "fixed_s": fixed,
        "per_token_s": slope,
        "rows": rows,
        "tokens": tokens,
        "seconds": seconds,
    }


def main(args: Args) -> dict:
    host = machine()
    print(f"machine: {host}", flush=True)
    (_, pioneer_batch, _, _), (observer, batch, scores, budget) = captured_updates(args)
    rows = torch.arange(len(batch))
    mb = min(observer.config.mini_batch_size, len(batch))
    pieces = [len(micro_batches(batch, rows[i : i + mb], budget)) for i in range(0, len(batch), mb)]
    times = paired(observer, batch, scores, budget, args.rounds)
    median = {arm: statistics.median(v) for arm, v in times.items()}
    ratio = {
        arm: statistics.median([a / w for a, w in zip(v, times["whole"], strict=True)])
        for arm, v in times.items()
    }
    fits = piece_fits(observer.agent, batch, args.sizes)
    fit = fits["fused"]
    out = {
        "machine": host,
        "model": args.model,
        "workload": "imdb" if args.imdb else "sentiment",
        "budget_tokens": budget,
        "observer_rows": len(batch),
        "mini_batch_size": mb,
        "observer_padded_tokens_per_mini_batch": mb * int(batch.attention_mask.sum(1).max()),
        "pioneer_longest": int(pioneer_batch.attention_mask.sum(1).max()),
        "pieces_per_mini_batch": pieces,
        "update_s": median,
        "over_whole": ratio,
        "piece_fit": fit,
        "piece_fit_peft": fits["peft"],
        "fixed_fused_over_peft": fit["fixed_s"] / fits["peft"]["fixed_s"],
    }
    print(
        f"observer update, median of {args.rounds} paired rounds: whole {median['whole']:.2f} s; cut to the "
        f"pioneer's {budget} tokens ({pieces} pieces per mini-batch) {median['cut']:.2f} s = "
        f"{ratio['cut']:.2f}x; cut, first piece not fused {median['cut_unfused']:.2f} s = {ratio['cut_unfused']:.2f}x"
    )
    for arm, f in fits.items():
        print(
            f"forward + backward, LoRA {arm}: {f['fixed_s']:.3f} s fixed + "
            f"{f['per_token_s'] * 1e3:.2f} ms per token (rows {f['rows']}: tokens {f['tokens']}, "
            f"seconds {[round(s, 3) for s in f['seconds']]})"
        )
    return record.emit(out, "budget", GOALS, args.save, __doc__)


if __name__ == "__main__":
    import tyro

    main(tyro.cli(Args))
