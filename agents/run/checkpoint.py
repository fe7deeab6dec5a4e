"""Resumable checkpoints: safetensors for the tensors, JSON for the rest, no pickle.

A checkpoint is a folder ``checkpoints/iter_<N>/`` (``N`` iterations done) holding
``tensors.safetensors`` and ``state.json`` (counters, RNG states as plain numbers, the
tree of the trainer's state with references into the tensors; see
:mod:`agents.run.state_codec`). Loading runs no code. A folder is written under a
temporary name and renamed into place once complete; the newest ``keep`` checkpoints are
kept, so a broken newest one still leaves the one before. A state holding a NaN or an
infinity is never written, and a pickle found where a checkpoint should be is refused.
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from agents.errors import CheckpointError, DivergedError
from agents.run.state_codec import decode, encode, non_finite

FORMAT = "cory-checkpoint-1"
_PREFIX = "iter_"
_PICKLES = ("*.pt", "*.pth", "*.pkl", "*.pickle", "*.bin")


def checkpoint_dir(output_dir: str | Path) -> Path:
    """Where a run's checkpoints live."""
    return Path(output_dir) / "checkpoints"


def save_checkpoint(root: str | Path, iteration: int, state: dict[str, Any], keep: int = 2) -> Path:
    """Write ``state`` as ``root/iter_<iteration>/`` and keep the newest ``keep`` checkpoints.

    Raises :class:`DivergedError` (writing nothing) when a floating-point tensor of the state
    is not finite, and :class:`CheckpointError` (removing the partial files, keeping the
    previous checkpoints) when the disk is full or the write fails.
    """
    root = Path(root)
    tree, tensors = encode(state)
    bad = non_finite(tensors)
    if bad:
        raise DivergedError(
            f"refusing to checkpoint iteration {iteration}: {len(bad)} tensors hold NaN or inf "
            f"(e.g. {bad[0]}); the previous checkpoint in {root} is kept"
        )
    final = root / f"{_PREFIX}{iteration:06d}"
    tmp = root / f".{final.name}.tmp"
    try:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        save_file(tensors, str(tmp / "tensors.safetensors"))
        text = json.dumps({"format": FORMAT, "iteration": int(iteration), "state": tree})
        with (tmp / "state.json").open("w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if err.errno == errno.ENOSPC or "No space left" in str(err):
            free = shutil.disk_usage(root if root.exists() else root.parent).free
            raise CheckpointError(
                f"the disk is full: could not write the checkpoint of iteration {iteration} to "
                f"{final} ({free / 2**20:.0f} MiB free there); the partial files were removed and "
                "the previous checkpoint is kept. Free some space, then resume with --resume"
            ) from err
        raise CheckpointError(f"could not write the checkpoint {final}: {err}") from err
    for old in checkpoints(root)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def checkpoints(root: str | Path) -> list[Path]:
    """The complete checkpoint folders under ``root``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(_PREFIX)
             and (p / "state.json").is_file() and (p / "tensors.safetensors").is_file()]
    return sorted(found, key=lambda p: p.name)


def refuse_pickles(root: str | Path) -> None:
    """Raise :class:`CheckpointError` if ``root`` holds pickle files (never unpickled)."""
    root = Path(root)
    if not root.is_dir():
        return
    pickles = sorted(p for pattern in _PICKLES for p in root.rglob(pattern))
    if pickles:
        raise CheckpointError(
            f"{pickles[0]} is a pickle file: refused, because unpickling runs whatever code it "
            "holds. Checkpoints of this version are safetensors + JSON folders "
            f"({root}/iter_<N>/); a run checkpointed by an older version must start over"
        )


def latest_checkpoint(root: str | Path) -> Path | None:
    """The newest complete checkpoint under ``root`` (None if there is none)."""
    refuse_pickles(root)
    found = checkpoints(root)
    return found[-1] if found else None


def load_checkpoint(path: str | Path) -> tuple[int, dict[str, Any]]:
    """``(iteration, state)`` of the checkpoint folder ``path`` (JSON and safetensors only)."""
    path = Path(path)
    refuse_pickles(path)
    try:
        meta = json.loads((path / "state.json").read_text())
        tensors = load_file(str(path / "tensors.safetensors"))
    except (OSError, ValueError) as err:
        raise CheckpointError(f"cannot read the checkpoint {path}: {err}") from err
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a {FORMAT} checkpoint (format {meta.get('format')!r})")
    return int(meta["iteration"]), decode(meta["state"], tensors)


def rng_state() -> dict[str, Any]:
    """The global RNG states (python, numpy, torch) for the checkpoint."""
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
