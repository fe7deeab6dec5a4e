"""Where an update's time goes: one CORY and one PPO iteration split into rollout, the
no-grad old-log-prob/value pass, the reference pass and the optimisation, with the model
FLOPs counted from the real token counts, the achieved FLOP/s as a fraction of the matmul
peak measured in the same process, and the fraction of computed tokens that are padding.

    python bench/update.py                                  # SmolLM2-135M, the default sentiment settings
    python bench/update.py --imdb ../shared/data/imdb/reviews_2000.csv --batch-size 16 \\
        --mini-batch-size 16 --min-new-tokens 4 --max-new-tokens 16   # the official script's settings
    python bench/update.py --model tiny                     # the tests' tiny model (seconds)

FLOPs: ``2 * (P * T + H * K)`` per forward over ``T`` computed token positions (packed: the
packed rows' slots; padded: the padded batch) of a model with ``P`` parameters besides the
input embeddings and the output head, whose ``H`` parameters project ``K`` positions (packed:
the response tokens; padded: every position from the shortest query on); ``2x`` that for the
backward (activation gradients through the base; LoRA's weight gradients are negligible; a
full fine-tune adds another 2x, counted); attention's own FLOPs are not counted. Padding
fraction: computed positions that hold no real token. Floor: the iteration's rollout plus
its update's counted FLOPs at the matmul peak (a bound for this work on the machine: every
update FLOP at the peak of one large matmul). The rollout's own floor is the larger of its
sampler forwards' FLOPs at the matmul peak and their weight reads at the memory bandwidth
measured in the same process (:mod:`bench.rollout_floor`). Each trainer runs twice, each time
in a fresh subprocess (its memory its own), the same seeded iterations (checked: the same
tokens): once timed, uninstrumented but for the phases' clocks; once for the peak RSS per
phase, sampled every 2 ms, the allocator's free memory handed back to the system
(``malloc_trim``) as each phase starts, so that a phase's peak is its own. (Timed while
sampling, an iteration takes longer: the trimmed pages fault back in, the sampler takes CPU
from the cores.) The last line printed is one JSON object of the metrics; the figures the
benchmarks page shows are :data:`GOALS` (``--goals``: :data:`GOALS_TABLE`), rendered in
``docs/benchmarks.md#update`` (and ``#update_goals``).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import math
import subprocess
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, fields
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the checkout and its tests.helpers

from agents.policy.loading import CPU_INSTRUCTIONS, TORCH_DTYPES  # noqa: E402
from agents.run.config import TrainConfig  # noqa: E402
from bench import record, rollout_floor  # noqa: E402
from bench.iteration import _rss, touch_weights  # noqa: E402
from bench.machine import machine  # noqa: E402


@dataclass
class Args:
    model: str = "smollm2-135m-instruct"
    """Model id/alias, ``tiny`` (the tests' tiny model), or ``random:<shape>`` (offline random
    weights of a shape of :data:`bench.models.SHAPES`)."""
    tokenizer: str | None = None
    """The tokenizer of a ``random:`` model (default: the embedded SmolLM2's)."""
    imdb: str | None = None
    """A local IMDB CSV: the ``imdb`` task on it (the official script's workload); else ``sentiment``."""
    batch_size: int = 16
    mini_batch_size: int = 8
    ppo_epochs: int = 4
    min_new_tokens: int | None = None
    max_new_tokens: int | None = None
    mode: str = "lora"
    dtype: str = "fp32"
    iterations: int = 2
    """Timed iterations per trainer (after one warm-up each; a second run of the same iterations
    samples the peak memory)."""
    max_tokens_per_microbatch: int | None = TrainConfig.max_tokens_per_microbatch
    """The token budget of a micro-batch (the run's default; None: none)."""
    pack_sequences: bool = True
    """Score packed sequences (False: padded, each row as long as the longest)."""
    observer_token_budget: bool = TrainConfig.observer_token_budget
    """Cut the observers' mini-batches to the pioneer's padded tokens (the run's default)."""
    fast_lora: bool = TrainConfig.fast_lora
    """LoRA merged when sampling, fused when scoring (the run's default); False: peft's layers."""
    activation_checkpointing: bool = False
    """Recompute each layer in the backward pass (``TrainConfig``'s option)."""
    trainers: tuple[str, ...] = ("cory", "ppo")
    """Which trainers to measure, each in its own process."""
    goals: bool = False
    """Fill the goals table in one run (tens of minutes on 2 cores):
    CORY on the official script's workload (needs ``--imdb``) with full copies in fp32 and in
    bf16, CORY with LoRA there (whole, observers cut, a token budget), and
    ``bench/iteration.py``'s CORY-LoRA / PPO-LoRA peak memory (whole, observers cut)."""
    goals_bf16: bool | None = None
    """With ``goals``: run the bf16 configuration; None: where the CPU has bf16 matmul
    instructions (:func:`agents.policy.loading.cpu_computes_natively`: elsewhere torch
    emulates them and the full-copy bf16 iterations would take hours)."""
    save: bool = False
    """Write the printed object, with the command, machine, date and commit, to
    ``bench/results/update/<machine kind>.json`` (``--goals``: ``update_goals/``; then:
    ``python bench/render.py``)."""
    child: str = ""
    """Internal: measure this one trainer in this process."""
    memory: bool = False
    """Internal, with ``child``: sample the peak memory (and report no times)."""


OFFICIAL_CORY_ITERATION_S = 46.9
"""The official CORY script's iteration (TRL 0.7, full copies, fp32) on the matched IMDB
settings, seconds, measured on a 2-core CPU machine: what the goals' ratios divide by."""
BUDGET = 512
"""The micro-batch token budget the goals table tries on the matched LoRA run (its observer's
batch, about 850 padded tokens, is cut in two)."""
MATCHED = dict(batch_size=16, mini_batch_size=16, ppo_epochs=4, min_new_tokens=4, max_new_tokens=16)
"""The official script's settings (with IMDB openings and the VADER reward)."""
UTILISATION_GOAL, PADDING_GOAL, ROLLOUT_GOAL = ">= 0.5", "<= 0.05", "<= 2"
"""The update's FLOP/s against the matmul peak; the padding fraction of computed tokens; the
default (CORY) rollout against its floor."""
GOALS: list[record.Goal] = [
    row
    for name, label in (("cory", "CORY"), ("ppo", "PPO"))
    for row in (
        (f"{name}_iteration_s", f"{label}: one iteration, seconds", "report"),
        (f"{name}_rollout_s", f"{label}: its rollout, seconds", "report"),
        (
            f"{name}_rollout_floor_s",
            f"{label}: the rollout's floor (its forwards' FLOPs at the matmul peak, or its "
            "weight reads at the memory bandwidth, the larger), seconds",
            "report",
        ),
        (
            f"{name}_rollout_over_floor",
            f"{label}: rollout / its floor",
            ROLLOUT_GOAL if name == "cory" else "report",
        ),
        (f"{name}_old_pass_s", f"{label}: the no-grad old-log-prob/value pass, seconds", "report"),
        (f"{name}_ref_pass_s", f"{label}: the reference pass, seconds", "report"),
        (f"{name}_optimisation_s", f"{label}: the optimisation, seconds", "report"),
        (f"{name}_utilisation", f"{label}: update FLOP/s / matmul peak", UTILISATION_GOAL),
        (f"{name}_padding_fraction", f"{label}: padding fraction of computed tokens", PADDING_GOAL),
        (f"{name}_peak_gib", f"{label}: peak RSS, GiB", "report"),
    )
]
"""The figures the benchmarks page shows of a default run, with their goals."""
GOALS_TABLE: list[record.Goal] = [
    (
        "fp32_over_official",
        "CORY, full copies, fp32, matched settings: one iteration / the "
        "official script's (:data:`OFFICIAL_CORY_ITERATION_S`)",
        "<= 0.35",
    ),
    ("goals_fp32.iteration_s", "the same iteration, seconds", "report"),
    (
        "goals_fp32.iteration_floor_s",
        "the same at the matmul peak: rollout + update FLOPs / peak",
        "report",
    ),
    ("goals_fp32.utilisation", "its update FLOP/s / matmul peak", UTILISATION_GOAL),
    ("goals_fp32.padding_fraction", "its padding fraction of computed tokens", PADDING_GOAL),
    ("bf16_over_official", "the same in bf16 (autocast) / the official script's", "<= 0.25"),
    ("goals_lora.iteration_s", "CORY, LoRA, matched settings: one iteration, seconds", "report"),
    ("goals_lora.peak_gib", "its peak RSS, GiB", "<= 2.5"),
    (
        "goals_lora_observers_cut.iteration_s",
        "the same, observers cut to the pioneer's tokens",
        "report",
    ),
    (
        f"goals_lora_budget_{BUDGET}.iteration_s",
        f"the same, a micro-batch budget of {BUDGET} tokens",
        "report",
    ),
]
"""The figures the benchmarks page shows of a ``--goals`` run."""


class Phases:
    """Times and counts the tokens of an agent's ``forward`` and ``ref_logprobs`` calls, and
    (inside :meth:`sampling`) samples the process's resident memory every 2 ms, keeping each
    phase's peak: ``rollout`` (everything outside a learner's update), ``old_pass``,
    ``ref_pass``, ``optimisation`` (the rest of the update)."""

    def __init__(self) -> None:
        self.reset()
        self.phase = "rollout"
        self.memory = False
        """Sampling: each phase starts with the allocator's free memory handed back."""

    def reset(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.tokens: dict[str, int] = defaultdict(int)
        self.real: dict[str, int] = defaultdict(int)
        self.head: dict[str, int] = defaultdict(int)
        self.peak: dict[str, int] = defaultdict(int)

    def _sample(self, stop: threading.Event) -> None:
        while not stop.wait(0.002):
            self.peak[self.phase] = max(self.peak[self.phase], _rss())

    @contextlib.contextmanager
    def sampling(self):
        """Peak RSS per phase while in the block (the peaks of before are dropped)."""
        self.peak.clear()
        _trim()  # the free memory the warm-up left
        stop = threading.Event()
        thread = threading.Thread(target=self._sample, args=(stop,), daemon=True)
        self.memory = True
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            self.memory = False

    def _trim_if_sampling(self) -> None:
        if self.memory:
            _trim()

    def wrap(self, learner) -> None:
        agent = learner.agent
        forward, ref, update = agent.forward, agent.ref_logprobs, learner.update

        def timed(name, fn, batch, *a, **k):
            self._trim_if_sampling()
            outer, self.phase = self.phase, name
            t0 = time.perf_counter()
            try:
                out = fn(batch, *a, **k)
            finally:
                self.seconds[name] += time.perf_counter() - t0
                self.phase = outer
            slots, head = computed_positions(agent, batch)
            self.tokens[name] += slots
            self.head[name] += head
            self.real[name] += int(batch.attention_mask.sum())
            return out

        def in_update(*a, **k):
            self._trim_if_sampling()
            self.phase = "optimisation"
            try:
                return update(*a, **k)
            finally:
                self._trim_if_sampling()
                self.phase = "rollout"

        def scored(b, *a, **k):
            if torch.is_grad_enabled():  # a loss's forward (the fused one included)
                return timed("loss_forward", forward, b, *a, **k)
            return timed("old_pass", forward, b, *a, **k)

        agent.forward = scored
        agent.ref_logprobs = lambda b, *a, **k: timed("ref_pass", ref, b, *a, **k)
        learner.update = in_update


def _trim() -> None:
    """Hand the C allocator's free memory back to the system (glibc), so RSS is live memory."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def matmul_peak(dtype: torch.dtype, n: int = 1024, repeats: int = 8, seconds: float = 1.0) -> float:
    """FLOP/s of an ``n x n`` matmul in this process: the best of ``repeats``, or of those
    timed before ``seconds`` were spent (a CPU without bf16 instructions emulates a 1024^3
    bf16 matmul in seconds, :func:`agents.policy.loading.cpu_computes_natively`)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best, spent = math.inf, 0.0
    for _ in range(repeats):
        t = _time(lambda: a @ b)
        best, spent = min(best, t), spent + t
        if spent > seconds:
            break
    return 2 * n**3 / best


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def computed_positions(agent, batch) -> tuple[int, int]:
    """``(token positions the body computes, positions the output head projects)`` of one
    scoring call of ``agent`` on ``batch``, packed (:mod:`agents.policy.packing`) or padded."""
    from agents.policy.packing import pack

    if agent.packing and agent._packs:
        p = pack(batch, agent.pad_id, agent._attention_cost)
        return p.slots, len(p.logit_index) + p.input_ids.shape[0]  # + logits_to_keep=1 per row
    s = batch.input_ids.shape[1]
    keep = s - int(batch.query_lengths.min()) + 1 if agent.keeps_logits else s
    return int(batch.input_ids.numel()), len(batch) * keep


def flop_params(model) -> tuple[int, int]:
    """``(body, head)`` parameters that cost FLOPs per computed / projected position: all
    but the input embeddings and the output head, and the output head (counted even when
    tied to the embeddings)."""
    emb, head = model.get_input_embeddings(), model.get_output_embeddings()
    skip = {id(p) for p in emb.parameters()} if emb is not None else set()
    if head is not None:
        skip |= {id(p) for p in head.parameters()}
    body = sum(p.numel() for p in model.parameters() if id(p) not in skip)
    return body, (head.weight.numel() if head is not None else 0)


def measure(trainer, args: Args, params: tuple[int, int], full: bool) -> dict[str, float]:
    phases = Phases()
    for learner in trainer.learners.values():
        phases.wrap(learner)
    for learner in trainer.learners.values():
        touch_weights(learner.agent.model)
    loaded = _rss()
    with rollout_floor.counting() as count:
        trainer.step(0)
        phases.reset()  # the warm-up iteration is not counted
        count.reset()
        rollout = total = 0.0
        with phases.sampling() if args.memory else contextlib.nullcontext():
            for it in range(1, args.iterations + 1):
                metrics = trainer.step(it)
                rollout += metrics["charts/rollout_s"]
                total += metrics["charts/iteration_s"]
    if args.memory:  # the peaks, and the tokens for the check against the timed run
        gib = 2**30
        return {
            "update_tokens": dict(phases.tokens),
            "loaded_gib": loaded / gib,
            "peak_gib": max(phases.peak.values()) / gib,
            **{f"peak_{k}_gib": v / gib for k, v in phases.peak.items()},
        }
    n = args.iterations
    s = {k: v / n for k, v in phases.seconds.items()}
    update = total / n - rollout / n
    backward_factor = (
        4 if full else 2
    )  # activation gradients; a full fine-tune's weight gradients too
    body, head = params
    forward = {k: 2 * (body * phases.tokens[k] + head * phases.head[k]) for k in phases.tokens}
    flops = (sum(forward.values()) + backward_factor / 2 * forward.get("loss_forward", 0)) / n
    computed = sum(phases.tokens.values())
    return {
        "iteration_s": total / n,
        "rollout_s": rollout / n,
        "old_pass_s": s.get("old_pass", 0.0),
        "ref_pass_s": s.get("ref_pass", 0.0),
        "optimisation_s": update - s.get("old_pass", 0.0) - s.get("ref_pass", 0.0),
        "update_flops": flops,
        "update_flops_per_s": flops / update,
        "padding_fraction": 1 - sum(phases.real.values()) / computed if computed else 0.0,
        "update_tokens": dict(phases.tokens),
        "rollout_count": count,
    }


def child(args: Args, name: str) -> dict:
    """One trainer (``cory`` or ``ppo``) measured in this process: timed, the matmul peaks
    too, or (``args.memory``) its peak memory."""
    if name not in ("cory", "ppo"):
        raise ValueError(f"no trainer {name!r}: cory or ppo")
    from agents.cory import CoryTrainer
    from baselines.ppo import SingleAgentTrainer
    from bench.models import load_bench_model

    model, tokenizer = load_bench_model(args.model, tokenizer=args.tokenizer)
    # the official script's workload: IMDB review openings scored by VADER (offline)
    task = (
        {"task": "imdb", "task_path": args.imdb, "reward": "vader"}
        if args.imdb
        else {"task": "sentiment"}
    )
    cfg = TrainConfig(
        model=args.model,
        iterations=args.iterations + 1,
        batch_size=args.batch_size,
        mini_batch_size=args.mini_batch_size,
        ppo_epochs=args.ppo_epochs,
        mode=args.mode,
        dtype=args.dtype,
        min_new_tokens=args.min_new_tokens,
        max_new_tokens=args.max_new_tokens,
        max_tokens_per_microbatch=args.max_tokens_per_microbatch,
        eval_every=0,
        progress=False,
        pack_sequences=args.pack_sequences,
        fast_lora=args.fast_lora,
        observer_token_budget=args.observer_token_budget,
        activation_checkpointing=args.activation_checkpointing,
        output_dir=f"/tmp/cory-bench-update-{name}",
        **task,
    )
    torch.manual_seed(0)
    params = flop_params(model)
    dtypes = {k: TORCH_DTYPES[k] for k in ("fp32", "bf16")}
    peak = {} if args.memory else {k: matmul_peak(dt) for k, dt in dtypes.items()}
    trainer = (CoryTrainer if name == "cory" else SingleAgentTrainer)(
        cfg, model=model, tokenizer=tokenizer
    )
    m = measure(trainer, args, params, full=args.mode == "full")
    if args.memory:
        return m
    # the machine's speed drifts: for the run's dtype, the better of a measurement before and one after
    own = "bf16" if args.dtype == "bf16" else "fp32"
    peak[own] = max(peak[own], matmul_peak(dtypes[own]))
    m["matmul_peak"] = peak[own]  # the run's dtype's: what its utilisation and floor divide by
    m["utilisation"] = m["update_flops_per_s"] / peak[own]
    # the floor: the iteration if its update ran every counted FLOP at the matmul peak
    m["update_at_peak_s"] = m["update_flops"] / peak[own]
    m["iteration_floor_s"] = m["rollout_s"] + m["update_at_peak_s"]
    weight_bytes = next(hf_weights(trainer)).element_size()
    m.update(
        rollout_floor.floor_s(
            m.pop("rollout_count"),
            params,
            weight_bytes,
            peak[own],
            rollout_floor.memory_bandwidth(),
            args.iterations,
        )
    )
    m["rollout_over_floor"] = m["rollout_s"] / m["rollout_floor_s"]
    m.update(
        flop_params_body=params[0],
        flop_params_head=params[1],
        matmul_peak_fp32=peak["fp32"],
        matmul_peak_bf16=peak["bf16"],
        workload=task["task"],
        trainer=name,
        **{
            k: getattr(cfg, k)
            for k in (
                "mode",
                "dtype",
                "batch_size",
                "mini_batch_size",
                "ppo_epochs",
                "min_new_tokens",
                "max_new_tokens",
                "max_tokens_per_microbatch",
                "pack_sequences",
                "fast_lora",
                "observer_token_budget",
                "activation_checkpointing",
            )
        },
    )
    return m


def hf_weights(trainer):
    """The weights of the first learner's transformers model (what its forwards read)."""
    from agents.policy.construction import hf_model

    return hf_model(next(iter(trainer.learners.values())).agent.model).parameters()


def report(name: str, m: dict) -> str:
    phases = ", ".join(
        f"{k} {m[f'peak_{k}_gib']:.2f}"
        for k in ("rollout", "old_pass", "ref_pass", "optimisation")
        if f"peak_{k}_gib" in m
    )
    return (
        f"{name}: iteration {m['iteration_s']:.2f} s = rollout {m['rollout_s']:.2f} (floor "
        f"{m['rollout_floor_s']:.2f}: {m['rollout_flops'] / 1e9:.0f} GFLOP at the peak "
        f"{m['rollout_flops_s']:.2f} s, {m['rollout_weight_bytes'] / 2**30:.1f} GiB read at "
        f"{m['memory_bandwidth'] / 1e9:.0f} GB/s {m['rollout_reads_s']:.2f} s; "
        f"{m['rollout_over_floor']:.2f}x) + old-log-prob/value "
        f"pass {m['old_pass_s']:.2f} + reference pass {m['ref_pass_s']:.2f} + optimisation "
        f"{m['optimisation_s']:.2f}; update {m['update_flops'] / 1e9:.1f} GFLOP at "
        f"{m['update_flops_per_s'] / 1e9:.2f} GFLOP/s = {m['utilisation']:.2f} of the matmul peak "
        f"({m['matmul_peak_fp32'] / 1e9:.1f} GFLOP/s fp32, {m['matmul_peak_bf16'] / 1e9:.1f} bf16); "
        f"padding {m['padding_fraction']:.2f} of computed tokens; peak RSS {m['peak_gib']:.2f} GiB "
        f"(loaded {m['loaded_gib']:.2f}; by phase: {phases})"
    )


def run_child(args: Args, name: str) -> dict:
    """:func:`child` in a fresh subprocess, timed; then in another, its memory sampled."""
    argv = []
    for f in fields(Args):
        flag, value = f.name.replace("_", "-"), getattr(args, f.name)
        if f.name in ("trainers", "child", "goals", "goals_bf16", "memory", "save") or (
            value is None and f.name != "max_tokens_per_microbatch"
        ):
            continue
        argv += (
            [f"--{flag}" if value else f"--no-{flag}"]
            if isinstance(value, bool)
            else [f"--{flag}", str(value)]
        )
    out = []
    for memory in ("--no-memory", "--memory"):
        res = subprocess.run(
            [sys.executable, __file__, *argv, "--child", name, memory],
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        if res.returncode:
            raise SystemExit(f"{name} failed:\n{res.stderr[-4000:]}")
        out.append(json.loads(res.stdout.strip().splitlines()[-1]))
    timed, sampled = out
    if timed["update_tokens"] != sampled["update_tokens"]:
        raise SystemExit(
            f"{name}: the timed and the sampled run computed other tokens "
            f"({timed['update_tokens']} / {sampled['update_tokens']}): the run is not deterministic"
        )
    return {**timed, **sampled}


def goals(args: Args) -> dict:
    """The goals table from one run (see ``Args.goals``)."""
    from dataclasses import replace

    from bench import iteration

    if not args.imdb:
        raise SystemExit("--goals needs --imdb (the official script's workload)")
    matched = replace(args, **MATCHED, goals=False)
    fp32 = run_child(replace(matched, mode="full", dtype="fp32"), "cory")
    print(report("CORY, full copies, fp32", fp32), flush=True)
    bf16 = None
    if runs_bf16(args):
        bf16 = run_child(replace(matched, mode="full", dtype="bf16"), "cory")
        print(report("CORY, full copies, bf16", bf16), flush=True)
    emulated = f"not run: this CPU emulates bf16 (no {CPU_INSTRUCTIONS['bf16']})"
    whole = run_child(replace(matched, mode="lora", dtype="fp32"), "cory")
    print(report("CORY, LoRA, fp32", whole), flush=True)
    lora = run_child(
        replace(matched, mode="lora", dtype="fp32", max_tokens_per_microbatch=BUDGET), "cory"
    )
    print(report(f"CORY, LoRA, fp32, token budget {BUDGET}", lora), flush=True)
    observer = run_child(
        replace(matched, mode="lora", dtype="fp32", observer_token_budget=True), "cory"
    )
    print(report("CORY, LoRA, fp32, observers cut to the pioneer's tokens", observer), flush=True)
    it_args = iteration.Args(model=args.model, tokenizer=args.tokenizer)
    cory_mem, ppo_mem = iteration.peak(it_args, "cory-lora"), iteration.peak(it_args, "ppo-lora")
    cut_mem = iteration.peak(replace(it_args, observer_token_budget=True), "cory-lora")
    gib = 2**30
    rows = [
        (
            "CORY iteration / official CORY iteration (46.9 s), matched settings, fp32 "
            "(floor: this rollout + the update's FLOPs at the matmul peak)",
            ratio(fp32),
            "<= 0.35",
        ),
        (
            "the same in bf16 (autocast)",
            ratio(bf16) if bf16 else emulated,
            "<= 0.25 at the CPU default dtype",
        ),
        (
            "update FLOP/s / matmul peak, same process (fp32; bf16)",
            f"{fp32['utilisation']:.2f}; " + (f"{bf16['utilisation']:.2f}" if bf16 else "-"),
            UTILISATION_GOAL,
        ),
        (
            "padding fraction of computed tokens (fp32 run)",
            f"{fp32['padding_fraction']:.3f}",
            PADDING_GOAL,
        ),
        (
            "peak RSS CORY-LoRA / PPO-LoRA, bench/iteration.py default, no checkpointing "
            "(whole mini-batches, the default; observers cut to the pioneer's tokens)",
            f"{cory_mem['peak_bytes'] / gib:.2f} / {ppo_mem['peak_bytes'] / gib:.2f} GiB = "
            f"{cory_mem['peak_bytes'] / ppo_mem['peak_bytes']:.2f}; {cut_mem['peak_bytes'] / gib:.2f} / "
            f"{ppo_mem['peak_bytes'] / gib:.2f} GiB = {cut_mem['peak_bytes'] / ppo_mem['peak_bytes']:.2f}",
            "<= 1.25",
        ),
        (
            f"CORY-LoRA peak RSS, matched settings (whole, the default; observers cut; budget {BUDGET})",
            f"{whole['peak_gib']:.2f} GiB; {observer['peak_gib']:.2f} GiB; {lora['peak_gib']:.2f} GiB",
            "<= 2.5 GiB",
        ),
        (
            "CORY-LoRA iteration with the observers cut / whole, matched settings",
            f"{observer['iteration_s']:.1f} s / {whole['iteration_s']:.1f} s = "
            f"{observer['iteration_s'] / whole['iteration_s']:.2f}",
            "<= 1.05",
        ),
        (
            f"CORY-LoRA iteration with a token budget of {BUDGET} / without one, matched settings",
            f"{lora['iteration_s']:.1f} s / {whole['iteration_s']:.1f} s = {lora['iteration_s'] / whole['iteration_s']:.2f}",
            "<= 1.05",
        ),
    ]
    host = machine()
    print(f"\nmachine: {host}\n\n| figure | measured | goal |\n|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    out = {
        "machine": host,
        "goals_fp32": fp32,
        "goals_bf16": bf16,
        "goals_lora": whole,
        f"goals_lora_budget_{BUDGET}": lora,
        "goals_lora_observers_cut": observer,
        "goals_cory_lora_peak": cory_mem,
        "goals_cory_lora_observers_cut_peak": cut_mem,
        "goals_ppo_lora_peak": ppo_mem,
        "fp32_over_official": fp32["iteration_s"] / OFFICIAL_CORY_ITERATION_S,
        "bf16_over_official": bf16["iteration_s"] / OFFICIAL_CORY_ITERATION_S if bf16 else None,
    }
    return record.emit(out, "update_goals", GOALS_TABLE, args.save, __doc__)


def ratio(m: dict) -> str:
    """A goals row's ``iteration / official = ratio (floor ...)``: the floor is the ratio the
    same rollout and update FLOPs would give with every update FLOP at the matmul peak."""
    official = OFFICIAL_CORY_ITERATION_S
    return (
        f"{m['iteration_s']:.1f} s / {official} s = {m['iteration_s'] / official:.2f} (floor "
        f"{m['rollout_s']:.1f} + {m['update_flops'] / 1e9:.0f} GFLOP at {m['matmul_peak'] / 1e9:.0f} "
        f"GFLOP/s = {m['iteration_floor_s']:.1f} s: {m['iteration_floor_s'] / official:.2f})"
    )


def runs_bf16(args: Args) -> bool:
    """Whether the goals run the bf16 configuration (``args.goals_bf16``; None: where the CPU
    computes bf16 natively)."""
    from agents.policy.loading import cpu_computes_natively

    return cpu_computes_natively("bf16") if args.goals_bf16 is None else args.goals_bf16


def main(args: Args) -> dict:
    """Each trainer in a fresh subprocess (its peak memory its own), in turn."""
    if args.child:
        print(json.dumps(child(args, args.child)))
        return {}
    if args.goals:
        return goals(args)
    host = machine()
    print(f"machine: {host}", flush=True)
    out = {
        "machine": host,
        "model": args.model,
        "workload": "imdb" if args.imdb else "sentiment",
        "mode": args.mode,
        "dtype": args.dtype,
        "batch_size": args.batch_size,
        "mini_batch_size": args.mini_batch_size,
    }
    for name in args.trainers:
        m = run_child(args, name)
        print(report(name, m), flush=True)
        out.update({f"{name}_{k}": v for k, v in m.items()})
    return record.emit(out, "update", GOALS, args.save, __doc__)


if __name__ == "__main__":
    import tyro

    main(tyro.cli(Args))
