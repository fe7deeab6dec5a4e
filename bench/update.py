"""Where an update's time goes: one CORY and one PPO iteration split into rollout, the
no-grad old-log-prob/value pass, the reference pass and the optimisation, with the model
FLOPs counted from the real token counts, the achieved FLOP/s as a fraction of the matmul
peak measured in the same process, and the fraction of computed tokens that are padding.

    python bench/update.py                                  # SmolLM2-135M, the default sentiment settings
    python bench/update.py --imdb ../shared/data/imdb/reviews_2000.csv --batch-size 16 \\
        --mini-batch-size 16 --min-new-tokens 4 --max-new-tokens 16   # the official script's settings
    python bench/update.py --model tiny                     # the tests' tiny model (seconds)

FLOPs: ``2 * P * T`` per forward over ``T`` computed token positions of a model with ``P``
parameters (input embeddings excluded, the output head counted; an upper bound where only
response positions are projected), and ``2x`` that for the backward (activation gradients
through the base; LoRA's weight gradients are negligible; a full fine-tune adds another 2x,
counted). The last line printed is one JSON object of the metrics.
"""

from __future__ import annotations

import json
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the checkout and its tests.helpers


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
    """Timed iterations per trainer (after one warm-up each)."""


class Phases:
    """Wraps an agent's ``forward`` and ``ref_logprobs`` to time them and count tokens."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.tokens: dict[str, int] = defaultdict(int)
        self.real: dict[str, int] = defaultdict(int)

    def wrap(self, agent) -> None:
        forward, ref = agent.forward, agent.ref_logprobs

        def timed(name, fn, batch, *a, **k):
            t0 = time.perf_counter()
            out = fn(batch, *a, **k)
            self.seconds[name] += time.perf_counter() - t0
            self.tokens[name] += int(batch.input_ids.numel())
            self.real[name] += int(batch.attention_mask.sum())
            return out

        agent.forward = lambda b, *a, **k: timed(
            "loss_forward" if torch.is_grad_enabled() else "old_pass", forward, b, *a, **k)
        agent.ref_logprobs = lambda b, *a, **k: timed("ref_pass", ref, b, *a, **k)


def matmul_peak(dtype: torch.dtype, n: int = 1024, repeats: int = 8) -> float:
    """FLOP/s of an ``n x n`` matmul in this process (best of ``repeats``)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = min(_time(lambda: a @ b) for _ in range(repeats))
    return 2 * n**3 / best


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def body_params(model) -> int:
    """Parameters that cost FLOPs per token: all but the input embeddings, plus the output
    head once (counted even when tied to the embeddings, and at every position)."""
    emb, head = model.get_input_embeddings(), model.get_output_embeddings()
    skip = {id(p) for p in emb.parameters()} if emb is not None else set()
    body = sum(p.numel() for p in model.parameters() if id(p) not in skip)
    tied = head is not None and id(head.weight) in skip
    return body + (head.weight.numel() if tied else 0)


def measure(trainer, args: Args, params: int, full: bool) -> dict[str, float]:
    phases = Phases()
    for learner in trainer.learners.values():
        phases.wrap(learner.agent)
    trainer.step(0)
    phases.__init__()  # the warm-up iteration is not counted
    rollout = total = 0.0
    for it in range(1, args.iterations + 1):
        metrics = trainer.step(it)
        rollout += metrics["charts/rollout_s"]
        total += metrics["charts/iteration_s"]
    n = args.iterations
    s = {k: v / n for k, v in phases.seconds.items()}
    update = total / n - rollout / n
    backward_factor = 4 if full else 2
    flops = (2 * params * (phases.tokens["old_pass"] + phases.tokens["ref_pass"] + phases.tokens["loss_forward"])
             + backward_factor * params * phases.tokens["loss_forward"]) / n
    computed = sum(phases.tokens.values())
    return {
        "iteration_s": total / n, "rollout_s": rollout / n, "old_pass_s": s.get("old_pass", 0.0),
        "ref_pass_s": s.get("ref_pass", 0.0),
        "optimisation_s": update - s.get("old_pass", 0.0) - s.get("ref_pass", 0.0),
        "update_flops": flops, "update_flops_per_s": flops / update,
        "padding_fraction": 1 - sum(phases.real.values()) / computed if computed else 0.0,
    }


def main(args: Args) -> dict:
    import copy

    from agents.cory import CoryTrainer
    from agents.run.config import TrainConfig
    from baselines.ppo import PPOTrainer
    from bench.models import load_bench_model

    model, tokenizer = load_bench_model(args.model, tokenizer=args.tokenizer)
    # the official script's workload: IMDB review openings scored by VADER (offline)
    task = {"task": "imdb", "task_path": args.imdb, "reward": "vader"} if args.imdb else {"task": "sentiment"}
    cfg = dict(model=args.model, iterations=args.iterations + 1, batch_size=args.batch_size,
               mini_batch_size=args.mini_batch_size, ppo_epochs=args.ppo_epochs, mode=args.mode,
               dtype=args.dtype, min_new_tokens=args.min_new_tokens, max_new_tokens=args.max_new_tokens,
               eval_every=0, progress=False, **task)
    torch.manual_seed(0)
    params = body_params(model)
    peak = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    out = {"model": args.model, "workload": task["task"], "mode": args.mode, "dtype": args.dtype,
           "batch_size": args.batch_size, "mini_batch_size": args.mini_batch_size,
           "flop_params": params, "matmul_peak_fp32": peak["fp32"], "matmul_peak_bf16": peak["bf16"]}
    trainers = {
        "cory": CoryTrainer(TrainConfig(**cfg, output_dir="/tmp/cory-bench-update-cory"),
                            model=copy.deepcopy(model), tokenizer=tokenizer),
        "ppo": PPOTrainer(TrainConfig(**cfg, output_dir="/tmp/cory-bench-update-ppo"), model=model,
                          tokenizer=tokenizer),
    }
    for name, trainer in trainers.items():
        m = measure(trainer, args, params, full=args.mode == "full")
        m["utilisation"] = m["update_flops_per_s"] / peak["bf16" if args.dtype == "bf16" else "fp32"]
        out.update({f"{name}_{k}": v for k, v in m.items()})
        print(f"{name}: iteration {m['iteration_s']:.2f} s = rollout {m['rollout_s']:.2f} + old-log-prob/value "
              f"pass {m['old_pass_s']:.2f} + reference pass {m['ref_pass_s']:.2f} + optimisation "
              f"{m['optimisation_s']:.2f}; update {m['update_flops'] / 1e9:.1f} GFLOP at "
              f"{m['update_flops_per_s'] / 1e9:.2f} GFLOP/s = {m['utilisation']:.2f} of the matmul peak "
              f"({peak['fp32'] / 1e9:.1f} GFLOP/s fp32, {peak['bf16'] / 1e9:.1f} bf16); "
              f"padding {m['padding_fraction']:.2f} of computed tokens")
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    import tyro

    main(tyro.cli(Args))
