"""Fine-tune an LLM alone (single-agent PPO, or any ``--learner``) on the env's one-agent
chain: the paper's baseline.

    python scripts/run_ppo.py                        # same defaults as run_cory.py
    python scripts/run_ppo.py --preset imdb-gpt2-large --model gpt2-xl   # the paper's control
"""

from __future__ import annotations

import sys

from agents.run.cli import run_main, train_from_cli
from baselines.ppo import SingleAgentTrainer


def main(argv: list[str] | None = None) -> list[dict]:
    return train_from_cli(SingleAgentTrainer, __doc__, argv, output_dir="runs/ppo")


if __name__ == "__main__":
    sys.exit(run_main(main, output_dir="runs/ppo"))
