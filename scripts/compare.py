"""Plot CORY and PPO runs side by side: reward and KL per iteration, reward against KL.

python scripts/compare.py runs/cory runs/ppo --out runs/compare
"""

from __future__ import annotations

import json
from pathlib import Path

import tyro
from tyro.conf import Positional

from agents.run.metrics import eval_key, models_in
from agents.run.plots import plot_runs


def main(runs: Positional[list[Path]], out: Path = Path("runs/compare")) -> None:
    """Read each run folder's metrics.jsonl and write the comparison plots to ``out``."""
    if not runs:
        raise SystemExit("give at least one run folder, e.g. runs/cory runs/ppo")
    missing = [str(r) for r in runs if not (r / "metrics.jsonl").is_file()]
    if missing:
        raise SystemExit(
            f"no metrics.jsonl in {', '.join(missing)}: pass run folders written by "
            "scripts/run_cory.py or scripts/run_ppo.py"
        )
    names = [run.name for run in runs]
    labels = names if len(set(names)) == len(names) else [str(run) for run in runs]
    data = {}
    for run, label in zip(runs, labels):
        rows = [
            json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()
        ]
        data[label] = (rows, models_in(rows))
        final = [r for r in rows if any(k.startswith("eval/") for k in r)]
        for m in data[label][1]:
            if final and eval_key(m, "reward") in final[-1]:
                last = final[-1]
                print(
                    f"{label}/{m}: eval reward {last[eval_key(m, 'reward')]:+.4f}  KL {last[eval_key(m, 'kl')]:.3f}"
                )
    for path in plot_runs(data, out):
        print("wrote", path)


def cli(args: list[str] | None = None) -> None:
    """Parse ``args`` (default: the command line) and run :func:`main`."""
    tyro.cli(main, args=args)


if __name__ == "__main__":
    cli()
