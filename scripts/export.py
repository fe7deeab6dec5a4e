"""Export a run's trained models: every run already writes ``RUN/models/<model>/`` (a peft
adapter or a full model, the tokenizer, the value head) with each checkpoint; ``--merge``
also writes each LoRA adapter merged into its base model as a full model.

    python scripts/export.py runs/cory --merge            # runs/cory/models/model_a-merged/ ...
    python scripts/export.py runs/cory --merge --out exported/
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import tyro
from tyro.conf import Positional

from agents.policy.export import merge_adapter
from agents.policy.loading import load_model
from agents.run.resume import saved_config


def main(run: Positional[Path], merge: bool = False, out: Path | None = None) -> list[Path]:
    """List (and with ``--merge`` merge) the models of the run folder ``run``."""
    models = run / "models"
    if not models.is_dir():
        raise SystemExit(
            f"{models} does not exist: pass a run folder written by run_cory.py / "
            "run_ppo.py (it gets models/ with its first checkpoint)"
        )
    config = saved_config(run)
    written = []
    for folder in sorted(
        p for p in models.iterdir() if p.is_dir() and not p.name.endswith("-merged")
    ):
        adapter = folder / "adapter_config.json"
        kind = "LoRA adapter" if adapter.is_file() else "full model"
        print(f"{folder}: {kind}")
        if merge and adapter.is_file():
            base_name = (
                json.loads(adapter.read_text()).get("base_model_name_or_path") or config["model"]
            )
            base, _ = load_model(base_name, device="cpu")
            target = (out or models) / f"{folder.name}-merged"
            written.append(merge_adapter(folder, base, target))
            print(f"  merged onto {base_name}: {target}")
    return written


if __name__ == "__main__":
    sys.exit(0 if tyro.cli(main) is not None else 1)
