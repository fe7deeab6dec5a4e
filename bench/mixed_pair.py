"""What a pair of models with different tokenizers costs against a pair that shares one:
CORY iterations of the tests' tiny models, the same two model shapes and seeds, one pair
over one tokenizer (vocabulary 320) and one over two (320 and a second byte-level BPE of
290, trained on other text), stepped in turn in one process so the machine's noise hits
both alike. The roles swap every iteration, so the mixed run uses both of its seatings.

    python bench/mixed_pair.py
    python bench/mixed_pair.py --iterations 20

The tiny models make the iteration mostly the run's own work (env, hand-off, sampler,
learner), which is where a mixed pair differs; the output heads differ by 30 rows. The last
line printed is one JSON object of the figures (:data:`GOALS`).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the checkout and its tests.helpers

from bench import record  # noqa: E402
from bench.machine import machine  # noqa: E402

GOALS = record.goals("""
shared_iteration_s | a CORY iteration, the pair over one tokenizer, median seconds | report
mixed_iteration_s | a CORY iteration, the pair over two tokenizers, median seconds | report
mixed_over_shared | the mixed pair's median iteration / the shared pair's | report
""")


@dataclass
class Args:
    iterations: int = 10
    """Timed iterations of each pair (after one warm-up iteration each)."""
    batch_size: int = 8
    """Queries per iteration."""
    new_tokens: int = 8
    """Answer length per turn."""
    save: bool = False
    """Write the printed object to ``bench/results/mixed_pair/<machine kind>.json``."""


def trainer(args: Args, tokenizers: list, out: Path):
    from agents.cory import CoryTrainer
    from agents.run.config import TrainConfig
    from tests.helpers.tiny import tiny_model

    config = TrainConfig(
        task="sentiment",
        iterations=args.iterations + 1,
        batch_size=args.batch_size,
        mini_batch_size=args.batch_size // 2,
        max_new_tokens=args.new_tokens,
        swap_period=1,
        eval_every=0,
        checkpoint_every=1000,  # steps are called directly: nothing is written
        lora_r=4,
        lora_alpha=8,
        progress=False,
        output_dir=str(out),
    )
    models = [tiny_model(i, tokenizer=t) for i, t in enumerate(tokenizers)]
    return CoryTrainer(config, model=models, tokenizer=tokenizers)


def main(args: Args) -> dict:
    from tests.helpers.tiny import other_tokenizer, tiny_tokenizer

    print(f"machine: {machine()}", flush=True)
    one, two = tiny_tokenizer(), other_tokenizer()
    with tempfile.TemporaryDirectory() as scratch:
        pairs = {
            "shared": trainer(args, [one, one], Path(scratch) / "shared"),
            "mixed": trainer(args, [one, two], Path(scratch) / "mixed"),
        }
        seconds: dict[str, list[float]] = {name: [] for name in pairs}
        for it in range(args.iterations + 1):
            for name, t in pairs.items() if it % 2 == 0 else reversed(pairs.items()):
                row = t.step(it)
                if it > 0:  # the first is the warm-up
                    seconds[name].append(row["charts/iteration_s"])
    shared, mixed = (statistics.median(seconds[n]) for n in ("shared", "mixed"))
    metrics = {
        "shared_iteration_s": shared,
        "mixed_iteration_s": mixed,
        "mixed_over_shared": mixed / shared,
        "iterations": args.iterations,
    }
    return record.emit(metrics, "mixed_pair", GOALS, args.save, __doc__)


if __name__ == "__main__":
    import tyro

    main(tyro.cli(Args))
