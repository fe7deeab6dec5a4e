"""What sampling with the LoRA adapter merged changes: the same prompts decoded at the
same seeds through peft's layers and through the merged ones (:mod:`agents.policy.
lora_calls`), the tokens compared until each sequence's first difference, and a decode
step timed both ways in turns.

    python bench/merged_tokens.py                  # the tests' tiny model and SmolLM2-135M
    python bench/merged_tokens.py --models tiny    # the tiny model alone (seconds)

The adapter is moved off its zero start (``lora_B`` drawn with standard deviation
``--b-std``), as after some updates, so that the merged weight differs from the base.
Tokens are drawn from the full distribution (temperature 1). A token that differs is
counted once per sequence: after it the two sequences condition on other text. The last
line printed is one JSON object of the figures (:data:`GOALS`).
"""

from __future__ import annotations

import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the checkout and its tests.helpers

from bench import record  # noqa: E402
from bench.machine import machine  # noqa: E402

GOALS = record.goals(
    "\n".join(
        f"""
{m}.tokens_compared | {name}: tokens compared (each sequence up to its first difference) | report
{m}.sequences_that_differ | {name}: sequences whose tokens differ somewhere | report
{m}.differ_per_1k_tokens | {name}: first differences per 1,000 tokens compared | report
{m}.max_logit_gap | {name}: the largest merged - peft logit gap over the compared steps | report
{m}.merged_over_peft | {name}: a decode step through the merged layers / through peft's | report
"""
        for m, name in (("tiny", "tiny model"), ("smollm2-135m-instruct", "SmolLM2-135M"))
    )
)


@dataclass
class Args:
    models: tuple[str, ...] = ("tiny", "smollm2-135m-instruct")
    """Model ids/aliases, ``tiny`` the tests' tiny model."""
    prompts: int = 16
    """Prompts decoded together (the default run's batch)."""
    new_tokens: int = 16
    """Tokens sampled per prompt and seed."""
    seeds: int = 8
    """Seeds (each a fresh decode of every prompt, both ways)."""
    b_std: float = 0.02
    """Standard deviation of the ``lora_B`` weights drawn."""
    save: bool = False
    """Write the printed object to ``bench/results/merged_tokens/<machine kind>.json``."""


def decode(agent, prompts, steps: int, seed: int, fast: bool):
    """``(tokens (steps, B), logits (steps, B, V), seconds per decode step)``."""
    from agents.policy.sampler import KVCacheSampler, sample_tokens
    from cory_env import GenerationConfig

    agent.fast_lora = fast
    g = torch.Generator().manual_seed(seed)
    tokens, logits = [], []
    with KVCacheSampler.open(agent, prompts, steps) as sampler:
        t0 = time.perf_counter()
        for _ in range(steps):
            logits.append(sampler.logits.clone())
            tokens.append(sample_tokens(sampler.logits, GenerationConfig(), g))
            sampler.advance(tokens[-1])
        spent = (time.perf_counter() - t0) / steps
    return torch.stack(tokens), torch.stack(logits), spent


def compared_steps(a: torch.Tensor, b: torch.Tensor) -> list[tuple[int, bool]]:
    """Per sequence of two ``(steps, B)`` token tensors: ``(steps compared, whether they
    differ)``, each compared up to and including its first differing token."""
    out = []
    for col in (a != b).numpy().T:
        hit = np.flatnonzero(col)
        out.append((int(hit[0]) + 1, True) if hit.size else (len(col), False))
    return out


def first_differences(a: torch.Tensor, b: torch.Tensor) -> tuple[int, int]:
    """``(tokens compared, sequences that differ)`` of two ``(steps, B)`` token tensors
    (:func:`compared_steps`)."""
    steps = compared_steps(a, b)
    return sum(n for n, _ in steps), sum(d for _, d in steps)


def compare(name: str, args: Args) -> dict:
    """The figures of one model (see the module doc)."""
    from agents.policy import LLMAgent
    from bench.models import load_bench_model

    model, tokenizer = load_bench_model(name)
    torch.manual_seed(0)
    agent = LLMAgent.lora(model, tokenizer)
    with torch.no_grad():
        for key, p in agent.model.named_parameters():
            if "lora_B" in key:
                p.normal_(0.0, args.b_std)
    rng = np.random.default_rng(0)
    high = min(len(tokenizer), 20000)
    prompts = [rng.integers(10, high, size=int(rng.integers(8, 24))) for _ in range(args.prompts)]
    compared = differ = 0
    gap = 0.0
    steps: dict[str, list[float]] = {"peft": [], "merged": []}
    for seed in range(args.seeds):
        order = (False, True) if seed % 2 == 0 else (True, False)
        runs = {fast: decode(agent, prompts, args.new_tokens, seed, fast) for fast in order}
        (t_peft, l_peft, s_peft), (t_merged, l_merged, s_merged) = runs[False], runs[True]
        steps["peft"].append(s_peft)
        steps["merged"].append(s_merged)
        for col, (upto, differs) in enumerate(compared_steps(t_peft, t_merged)):
            compared, differ = compared + upto, differ + differs
            # the logits of equal histories
            gap = max(gap, float((l_peft[:upto, col] - l_merged[:upto, col]).abs().max()))
    median = {k: statistics.median(v) for k, v in steps.items()}
    out = {
        "tokens_compared": compared,
        "sequences": args.prompts * args.seeds,
        "sequences_that_differ": differ,
        "differ_per_1k_tokens": 1000 * differ / compared,
        "max_logit_gap": gap,
        "step_s": median,
        "merged_over_peft": median["merged"] / median["peft"],
    }
    print(
        f"{name}: {differ} of {out['sequences']} sequences differ somewhere "
        f"({out['differ_per_1k_tokens']:.2f} per 1,000 tokens compared, {compared} "
        f"compared); largest logit gap {gap:.2e}; decode step merged {median['merged']:.4f} s "
        f"/ peft's {median['peft']:.4f} s = {out['merged_over_peft']:.2f}",
        flush=True,
    )
    return out


def main(args: Args) -> dict:
    print(f"machine: {machine()}", flush=True)
    metrics = {name: compare(name, args) for name in args.models}
    return record.emit(metrics, "merged_tokens", GOALS, args.save, __doc__)


if __name__ == "__main__":
    import tyro

    main(tyro.cli(Args))
