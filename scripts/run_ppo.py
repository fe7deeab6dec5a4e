"""Fine-tune an LLM with single-agent PPO on the same env: the paper's baseline.

    python scripts/run_ppo.py                        # same defaults as run_cory.py
    python scripts/run_ppo.py --preset imdb-gpt2-large --model gpt2-xl   # the paper's control
"""

from __future__ import annotations

import sys

from agents.run.cli import parse, run_main, summarize
from baselines.ppo import SingleAgentTrainer


def main(argv: list[str] | None = None) -> list[dict]:
    config = parse(__doc__, argv, output_dir="runs/ppo")
    trainer = SingleAgentTrainer(config)
    rows = trainer.train()
    if trainer.world.is_main:
        summarize(rows, SingleAgentTrainer.models, config.output_dir)
    return rows


if __name__ == "__main__":
    sys.exit(run_main(main, output_dir="runs/ppo"))
