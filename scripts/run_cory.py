"""Fine-tune an LLM with CORY: a pioneer and an observer, a shared reward, role exchange.

    python scripts/run_cory.py                       # SmolLM2-135M on `sentiment`, ~10 min on CPU
    python scripts/run_cory.py --iterations 2 --batch-size 4
    python scripts/run_cory.py --preset imdb-gpt2-large   # the paper's IMDB setting (GPU)
    python scripts/run_cory.py --output-dir runs/cory --resume

Everything lands in ``--output-dir``: config.json, metrics.csv/.jsonl, tensorboard/,
samples.jsonl, plots/*.png, checkpoints/last.pt.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _cli import parse  # noqa: E402

from agents.cory import CoryTrainer  # noqa: E402


def main(argv: list[str] | None = None) -> list[dict]:
    config = parse(__doc__, argv)
    rows = CoryTrainer(config).train()
    summarize(rows, CoryTrainer.models, config.output_dir)
    return rows


def summarize(rows: list[dict], models, output_dir: str) -> None:
    """Print the first and last evaluation of each model, and where the run is."""
    evals = [r for r in rows if any(k.startswith("eval/") for k in r)]
    if evals:
        first, last = evals[0], evals[-1]
        print(f"\nevaluation alone on held-out queries (iteration {first['iteration']} -> {last['iteration']}):")
        for m in models:
            print(f"  {m:8s} reward {first[f'eval/{m}/reward']:+.4f} -> {last[f'eval/{m}/reward']:+.4f}"
                  f"   KL {first[f'eval/{m}/kl']:.3f} -> {last[f'eval/{m}/kl']:.3f}")
    print(f"run folder: {output_dir} (metrics.csv, samples.jsonl, plots/, checkpoints/)")


if __name__ == "__main__":
    main()
