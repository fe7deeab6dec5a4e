"""Where a small step's time goes besides FLOPs: operator calls per forward and backward,
the time per call, the share of the step that is matmul at the measured peak, and the calls
and time grouped by what a fix would remove.

Three steps of the default CORY settings, each on a batch a real iteration built (the
pioneer's, captured after a warm-up iteration): one forward + backward of a mini-batch
(``--mini-batch-size`` rows: the default update's unit), one forward + backward of 16
answers (the rows of a GRPO group of 16), and the rollout's decode steps (the KV-cache
sampler, one token per step for the whole batch).

    python bench/op_overhead.py                 # SmolLM2-135M + LoRA, the default settings
    python bench/op_overhead.py --model tiny    # the tests' tiny model (seconds)

Each step is timed unprofiled (best of ``--repeats``), then run once under
``torch.profiler``. Module hooks open a profiler range per module kind, and every aten call
is charged to the innermost range it runs in: ``lora`` (a peft LoRA layer's own work: its
``lora_A``/``lora_B``/dropout and the scale-and-add, not its base linear), ``linear`` (the
base linears), ``attention`` (an attention module's work besides its linears: rotary,
scaled-dot-product attention, reshapes), ``mlp`` (the activation and product), ``norm``,
``embedding``, ``model`` (the model's own code around its layers: attention masks, position
ids, rotary tables, cache bookkeeping) and ``outside`` (the project's code around the model:
log-probs, value head, masks, dtype casts). Backward calls are charged to the range of the
forward call that made their autograd node (the profiler's sequence numbers). ``casts``
counts the ``aten::to``/``_to_copy`` calls wherever they run. For the decode steps,
``sampler_python_s`` is the step's wall time that is not the model's forward (sampling,
the env-free token bookkeeping, the mask update).

FLOPs are counted as in :mod:`bench.update` (``2 * (P * T + H * K)`` per forward, twice
that for the LoRA backward); ``matmul_share`` is their time at the matmul peak measured in
this process over the step's wall time. The last line printed is one JSON object.
"""

from __future__ import annotations

import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.autograd.profiler import record_function
from torch.profiler import ProfilerActivity, profile

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the checkout and its tests.helpers

from bench import record  # noqa: E402
from bench.budget import Args as BudgetArgs  # noqa: E402
from bench.budget import backward_of, captured_updates  # noqa: E402
from bench.machine import machine  # noqa: E402
from bench.update import computed_positions, flop_params, matmul_peak  # noqa: E402

KINDS = ("lora", "linear", "attention", "mlp", "norm", "embedding", "model", "outside")
CASTS = ("aten::to", "aten::_to_copy")
GOALS = record.goals("""
mini_batch.calls_forward | a mini-batch: aten calls in the forward | report
mini_batch.calls_backward | a mini-batch: aten calls in the backward | report
mini_batch.us_per_call | a mini-batch: wall time per aten call, microseconds | report
mini_batch.matmul_share | a mini-batch: counted FLOPs at the matmul peak / wall time | report
mini_batch.lora_share | a mini-batch: profiled time in the LoRA layers' own work | report
group.calls_forward | 16 answers: aten calls in the forward | report
group.us_per_call | 16 answers: wall time per aten call, microseconds | report
group.matmul_share | 16 answers: counted FLOPs at the matmul peak / wall time | report
group.lora_share | 16 answers: profiled time in the LoRA layers' own work | report
decode.calls_forward | a decode step: aten calls | report
decode.us_per_call | a decode step: wall time per aten call, microseconds | report
decode.lora_share | a decode step: profiled time in the LoRA layers' own work | report
decode.sampler_python_share | a decode step: wall time outside the model's forward | report
""")


@dataclass
class Args:
    model: str = "smollm2-135m-instruct"
    """Model id/alias, ``tiny`` (the tests' tiny model), or ``random:<shape>``."""
    repeats: int = 3
    """Unprofiled timings of each step (the best is kept)."""
    decode_steps: int = 8
    """Decode steps timed and profiled."""
    fast_lora: bool = True
    """LoRA merged when sampling, fused when scoring (the run's default); False: peft's
    layers (each LoRA layer's base linear then runs as a ``linear`` of its own)."""
    save: bool = False
    """Write the printed object to ``bench/results/op_overhead/<machine kind>.json``."""


def kind_of(module: torch.nn.Module) -> str | None:
    """The range a module's forward is charged to (None: its parent's)."""
    if hasattr(module, "lora_A") and hasattr(module, "base_layer"):
        return "lora"
    if isinstance(module, torch.nn.Linear):
        return "linear"
    name = type(module).__name__
    for kind, mark in (
        ("attention", "Attention"),
        ("mlp", "MLP"),
        ("norm", "Norm"),
        ("embedding", "Embedding"),
    ):
        if mark in name:
            return kind
    return None


def tag_modules(model: torch.nn.Module, top: torch.nn.Module) -> list[Any]:
    """Hooks that open a ``kind::<k>`` profiler range around each module of a kind (and
    ``kind::model`` around ``top``, the transformer); returns the hook handles."""
    handles, open_ranges = [], {}
    lora_parts = set()
    for module in model.modules():
        if hasattr(module, "lora_A") and hasattr(module, "base_layer"):
            lora_parts |= {id(m) for m in module.lora_A.modules()}
            lora_parts |= {id(m) for m in module.lora_B.modules()}
    for module in model.modules():
        kind = "model" if module is top else kind_of(module)
        if id(module) in lora_parts:
            kind = None  # lora_A / lora_B are the LoRA layer's own work
        if kind is None:
            continue

        def enter(mod, args, kwargs=None, kind=kind):
            rf = record_function(f"kind::{kind}")
            rf.__enter__()
            open_ranges.setdefault(id(mod), []).append(rf)

        def leave(mod, args, out, kind=kind):
            open_ranges[id(mod)].pop().__exit__(None, None, None)

        handles.append(module.register_forward_pre_hook(enter))
        handles.append(module.register_forward_hook(leave))
    return handles


def _range_of(event: Any) -> str:
    parent = event.cpu_parent
    while parent is not None:
        if parent.name.startswith("kind::"):
            return parent.name[len("kind::") :]
        parent = parent.cpu_parent
    return "outside"


def _under(event: Any, *prefixes: str) -> bool:
    """Whether an enclosing event's name starts with one of ``prefixes``."""
    parent = event.cpu_parent
    while parent is not None:
        if parent.name.startswith(prefixes):
            return True
        parent = parent.cpu_parent
    return False


def _top_level(event: Any) -> bool:
    """An aten call not made by another aten call or autograd node."""
    return event.name.startswith("aten::") and not _under(event, "aten::", "autograd::engine")


def own_backward(name: str) -> str:
    """The range of a backward node no aten call made: a custom autograd function's (the
    fused LoRA layers' :class:`agents.policy.lora_calls.LoraLinear`), else ``outside``."""
    return "lora" if name.endswith(": LoraLinearBackward") else "outside"


def summarise(prof: Any) -> dict[str, Any]:
    """Calls and profiled milliseconds per range, forward and backward, and the casts."""
    events = prof.events()
    seq_kind: dict[int, str] = {}
    calls: dict[str, Counter] = {"forward": Counter(), "backward": Counter()}
    ms: dict[str, float] = defaultdict(float)
    casts = 0
    for e in sorted(events, key=lambda e: e.time_range.start):
        if e.name.startswith("aten::") and e.sequence_nr >= 0 and not _under(e, "autograd::engine"):
            # the last call to record a sequence number is the one that made its node
            seq_kind[e.sequence_nr] = _range_of(e)
        if e.name in CASTS and not _under(e, "aten::"):
            casts += 1
    for e in events:
        if e.name.startswith("autograd::engine::evaluate_function"):
            kind = seq_kind.get(e.sequence_nr) or own_backward(e.name)
            calls["backward"][kind] += (
                sum(1 for c in e.cpu_children if c.name.startswith("aten::")) or 1
            )
            ms[kind] += e.cpu_time_total / 1e3
        elif _top_level(e):
            kind = _range_of(e)
            calls["forward"][kind] += 1
            ms[kind] += e.cpu_time_total / 1e3
    total = sum(ms.values()) or 1.0
    return {
        "calls_forward": sum(calls["forward"].values()),
        "calls_backward": sum(calls["backward"].values()),
        "casts": casts,
        "by_kind": {
            k: {
                "calls_forward": calls["forward"][k],
                "calls_backward": calls["backward"][k],
                "profiled_ms": round(ms[k], 3),
                "share": round(ms[k] / total, 4),
            }
            for k in KINDS
        },
        "lora_share": round(ms["lora"] / total, 4),
    }


def forward_backward(agent: Any, batch: Any) -> None:
    backward_of(agent, batch)
    agent.model.zero_grad(set_to_none=True)


def best_of(fn: Any, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def train_step(agent: Any, batch: Any, args: Args, peak: float) -> dict[str, Any]:
    """One forward + backward of ``batch``: wall time, calls, matmul share, ranges."""
    forward_backward(agent, batch)  # warm-up
    wall = best_of(lambda: forward_backward(agent, batch), args.repeats)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        forward_backward(agent, batch)
    out = summarise(prof)
    body, head = flop_params(agent.model)
    tokens, projected = computed_positions(agent, batch)
    flops = 3 * 2 * (body * tokens + head * projected)  # forward + the LoRA backward (2x)
    calls = out["calls_forward"] + out["calls_backward"]
    return {
        "rows": len(batch),
        "tokens": tokens,
        "wall_s": wall,
        "us_per_call": wall / calls * 1e6,
        "matmul_share": flops / peak / wall,
        **out,
    }


def decode(agent: Any, prompts: list[np.ndarray], args: Args, peak: float) -> dict[str, Any]:
    """The sampler's decode steps on ``prompts``: per step wall time, model-forward time,
    calls and ranges (the prompt's prefill is not counted)."""
    from agents.policy.sampler import KVCacheSampler

    inside = [0.0]

    def steps(prof: Any = None) -> float:
        """Seconds of ``args.decode_steps`` greedy steps after the prefill (profiled by
        ``prof`` when given); ``inside[0]``: the model forwards' share of them."""
        with KVCacheSampler.open(agent, prompts, args.decode_steps + 1) as sampler:
            model, t_in = sampler.model, []
            pre = model.register_forward_pre_hook(lambda *_: t_in.append(time.perf_counter()))
            post = model.register_forward_hook(
                lambda *_: inside.__setitem__(0, inside[0] + time.perf_counter() - t_in.pop())
            )
            try:
                inside[0] = 0.0
                if prof is not None:
                    prof.start()
                t0 = time.perf_counter()
                for _ in range(args.decode_steps):
                    sampler.advance(torch.argmax(sampler.logits, dim=-1))
                wall = time.perf_counter() - t0
                if prof is not None:
                    prof.stop()
                return wall
            finally:
                pre.remove()
                post.remove()

    steps()
    wall, model_s = min((steps(), inside[0]) for _ in range(args.repeats))
    prof = profile(activities=[ProfilerActivity.CPU])
    steps(prof)
    out = summarise(prof)
    n = args.decode_steps
    body, head = flop_params(agent.model)
    flops = 2 * (body + head) * len(prompts) * n
    return {
        "rows": len(prompts),
        "wall_s": wall / n,
        "calls_forward": out["calls_forward"] / n,
        "us_per_call": wall / out["calls_forward"] * 1e6,
        "matmul_share": flops / peak / wall,
        "sampler_python_share": 1 - model_s / wall,
        "casts": out["casts"] / n,
        "by_kind": {
            k: {**v, "calls_forward": v["calls_forward"] / n} for k, v in out["by_kind"].items()
        },
        "lora_share": out["lora_share"],
    }


def main(args: Args) -> dict:
    print(f"machine: {machine()}", flush=True)
    (learner, batch, _, _), _ = captured_updates(BudgetArgs(model=args.model))
    agent = learner.agent
    agent.fast_lora = args.fast_lora
    top = getattr(agent.model, "get_base_model", lambda: agent.model)()
    handles = tag_modules(agent.model, getattr(top, "model", top))
    dtype = next(agent.model.parameters()).dtype
    peak = matmul_peak(dtype)
    mb = min(learner.config.mini_batch_size, len(batch))
    group = min(16, len(batch))
    try:
        metrics = {
            "matmul_peak_gflops": peak / 1e9,
            "mini_batch": train_step(agent, batch.subset(torch.arange(mb)), args, peak),
            "group": train_step(agent, batch.subset(torch.arange(group)), args, peak),
            "decode": decode(agent, _prompts(batch), args, peak),
        }
    finally:
        for h in handles:
            h.remove()
    return record.emit(metrics, "op_overhead", GOALS, args.save, __doc__)


def _prompts(batch: Any) -> list[np.ndarray]:
    """The batch's query ids (rows are query ++ response, right-padded)."""
    return [
        batch.input_ids[i, : int(batch.query_lengths[i])].cpu().numpy() for i in range(len(batch))
    ]


if __name__ == "__main__":
    import tyro

    main(tyro.cli(Args))
