"""The CLI shared by the run scripts: a tyro parser over :class:`agents.run.config.TrainConfig`,
with ``--preset`` supplying the defaults that explicit flags then override, and the
summary a run prints at its end."""

from __future__ import annotations

import sys

import tyro

from agents.run.config import TrainConfig, preset_config
from agents.run.metrics import eval_key


def _peek_preset(argv: list[str]) -> str:
    for i, arg in enumerate(argv):
        if arg == "--preset" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--preset="):
            return arg.split("=", 1)[1]
    return "none"


def parse(description: str, argv: list[str] | None = None, **defaults) -> TrainConfig:
    """Parse ``argv`` (default: the command line) into a config."""
    argv = sys.argv[1:] if argv is None else argv
    default = preset_config(_peek_preset(argv), **defaults)
    return tyro.cli(TrainConfig, default=default, args=argv, description=description)


def summarize(rows: list[dict], models, output_dir: str) -> None:
    """Print the first and last evaluation of each model, and where the run is."""
    evals = [r for r in rows if any(k.startswith("eval/") for k in r)]
    if evals:
        first, last = evals[0], evals[-1]
        print(f"\nevaluation alone on held-out queries (iteration {first['iteration']} -> {last['iteration']}):")
        for m in models:
            reward, kl = eval_key(m, "reward"), eval_key(m, "kl")
            print(f"  {m:8s} reward {first[reward]:+.4f} -> {last[reward]:+.4f}"
                  f"   KL {first[kl]:.3f} -> {last[kl]:.3f}")
    print(f"run folder: {output_dir} (metrics.csv, samples.jsonl, plots/, checkpoints/)")
