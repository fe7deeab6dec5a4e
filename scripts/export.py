"""Export a run's trained models: every run already writes ``RUN/models/<model>/`` (a peft
adapter or a full model, the tokenizer, the value head, a model card) with each checkpoint.
An adapter records its base as an absolute folder or a hub id, so
``AutoPeftModelForCausalLM.from_pretrained("RUN/models/model_a")`` loads it offline.

``--with-base`` copies the adapters' base model into ``RUN/models/base/`` and points the
adapters at it by the relative path ``../base``, so the run folder holds everything and can
be moved or shared (a run whose models start from different bases gets ``base-<model>/``
per adapter). ``--merge`` also writes each LoRA adapter merged into its base as a full model.

    python scripts/export.py runs/cory --with-base        # runs/cory/models/base/
    python scripts/export.py runs/cory --merge            # runs/cory/models/model_a-merged/ ...
    python scripts/export.py runs/cory --merge --out exported/
"""

from __future__ import annotations

import sys
from pathlib import Path

import tyro
from tyro.conf import Positional

from agents.policy.export import base_of, merge_adapter, point_adapter, write_base
from agents.policy.loading import gguf_cache, load_model, resolve_source
from agents.run.resume import saved_config

BASE = "base"


def model_folders(models: Path) -> list[Path]:
    """The exported models of a run's ``models/`` folder (not merged copies or bases)."""
    return sorted(
        p
        for p in models.iterdir()
        if p.is_dir()
        and not p.name.startswith(".")
        and not p.name.endswith("-merged")
        and not (p.name == BASE or p.name.startswith(f"{BASE}-"))
    )


def copy_base(models: Path, adapters: list[Path], fallback: str) -> list[Path]:
    """Copy each adapter's base under ``models/`` and point the adapter at it relatively."""
    bases = {a: base_of(a) or fallback for a in adapters}
    shared = len(set(bases.values())) == 1
    written: dict[str, Path] = {}
    for adapter, base in bases.items():
        target = models / (BASE if shared else f"{BASE}-{adapter.name}")
        if base not in written:
            if Path(base).resolve() != target.resolve():
                write_base(_loadable(base), target)
            written[base] = target
            print(f"base {base} -> {target}")
        point_adapter(adapter, f"../{target.name}")
        print(f"  {adapter.name} -> ../{target.name}")
    return list(dict.fromkeys(written.values()))


def _loadable(base: str) -> str:
    """A folder or hub id transformers loads for ``base`` (an alias or GGUF: its converted
    folder)."""
    kind, where = resolve_source(base)
    return str(gguf_cache(where)) if kind == "gguf" else str(where)


def main(
    run: Positional[Path], merge: bool = False, with_base: bool = False, out: Path | None = None
) -> list[Path]:
    """List the models of the run folder ``run``; ``--with-base`` adds their base model to
    the folder; ``--merge`` writes each adapter merged into its base (under ``--out``)."""
    models = run / "models"
    if not models.is_dir():
        raise SystemExit(
            f"{models} does not exist: pass a run folder written by run_cory.py / "
            "run_ppo.py (it gets models/ with its first checkpoint)"
        )
    config = saved_config(run)
    folders = model_folders(models)
    adapters = [f for f in folders if (f / "adapter_config.json").is_file()]
    for folder in folders:
        print(f"{folder}: {'LoRA adapter' if folder in adapters else 'full model'}")
    written = copy_base(models, adapters, config["model"]) if with_base and adapters else []
    if merge:
        for folder in adapters:
            base_name = base_of(folder) or config["model"]
            base, _ = load_model(base_name, device="cpu")
            target = (out or models) / f"{folder.name}-merged"
            written.append(merge_adapter(folder, base, target))
            print(f"  merged onto {base_name}: {target}")
    return written


if __name__ == "__main__":
    sys.exit(0 if tyro.cli(main) is not None else 1)
