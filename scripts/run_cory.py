"""Fine-tune an LLM with CORY: a pioneer and an observer, a shared reward, role exchange.

    python scripts/run_cory.py                       # SmolLM2-135M on `sentiment`, on the CPU
    python scripts/run_cory.py --iterations 2 --batch-size 4
    python scripts/run_cory.py --num-agents 3 --seat-max-new-tokens 4 8 8   # a chain of three
    python scripts/run_cory.py --preset imdb-gpt2-large   # the paper's IMDB setting (GPU)
    python scripts/run_cory.py --output-dir runs/cory --resume

Everything lands in ``--output-dir``: config.json, metrics.csv/.jsonl, tensorboard/,
samples.jsonl, events.jsonl, plots/*.png, checkpoints/iter_<N>/ (safetensors + JSON).
Errors are one line (the traceback in the run folder's error.log; --debug prints it);
SIGINT / SIGTERM stop after the current iteration with a checkpoint.
"""

from __future__ import annotations

import sys

from agents.cory import CoryTrainer
from agents.run.cli import run_main, train_from_cli


def main(argv: list[str] | None = None) -> list[dict]:
    return train_from_cli(CoryTrainer, __doc__, argv)


if __name__ == "__main__":
    sys.exit(run_main(main, output_dir="runs/cory"))
