"""Resumable checkpoints: safetensors for the tensors, JSON for the rest, no pickle.

A checkpoint is a folder ``checkpoints/iter_<N>/`` (``N`` iterations done) holding
``tensors.safetensors`` and ``state.json`` (counters, RNG states as plain numbers, the
tree of the trainer's state with references into the tensors; see
:mod:`agents.run.state_codec`). Loading runs no code. A folder is written under a
temporary name and renamed into place once complete; the newest ``keep`` checkpoints are
kept, so a broken newest one still leaves the one before. A state holding a NaN or an
infinity is never written, and a pickle found where a checkpoint should be is refused.

Verified: ``state.json``, written (and synced) last, records every other file's size and
sha256 (``files``) and ends with the sha256 of its own text before that entry
(``state_sha256``), so a short, emptied, missing or changed file, or a ``state.json`` that
is missing, unparsable or changed, is found (:func:`verify_checkpoint`) before anything is
loaded. On resume :func:`intact_checkpoint` takes the newest checkpoint that verifies: the
damaged ones newer than it are set aside (renamed ``damaged-iter_<N>``, a ``reason.txt``
beside their files, never deleted, never counted by :func:`checkpoints` or the rotation)
with one line saying which and why; when none verifies, nothing is renamed and one
:class:`CheckpointError` names each checkpoint's damaged file. A checkpoint written
without ``files`` (by a version without digests) still loads: its tensor files must be
present and whole (a safetensors header records every tensor's extent, so a short or
empty file is caught), but a changed byte inside the data is not.

Sharded (FSDP launched with ``fsdp_state_dict_type: SHARDED_STATE_DICT``, ``world.
sharded_checkpoints``): every process calls :func:`save_checkpoint`; the state's
:class:`~agents.distributed.Shard` entries (each process's part of the sharded weights
and Adam moments) go to one file per process, ``tensors.safetensors`` (process 0, with
everything else) and ``tensors.rank<r>.safetensors``, and ``state.json`` records how many
processes wrote it and every process's file digest (gathered to process 0), so nothing is
gathered into one process's memory. It resumes with the same number of processes
(another is refused with a message); process 0 verifies every process's file on resume
and each process verifies the files it reads.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from agents.distributed import SINGLE, World, gather
from agents.errors import CheckpointError, DivergedError
from agents.run.integrity import FORMAT, file_entry, sealed, tensor_file, verified
from agents.run.state_codec import decode, encode, non_finite, shard_names

_PREFIX = "iter_"
_ASIDE = "damaged-"
"""A damaged checkpoint set aside is renamed ``damaged-iter_<N>``."""
_PICKLES = ("*.pt", "*.pth", "*.pkl", "*.pickle", "*.bin")


def checkpoint_dir(output_dir: str | Path) -> Path:
    """Where a run's checkpoints live."""
    return Path(output_dir) / "checkpoints"


def save_checkpoint(
    root: str | Path, iteration: int, state: dict[str, Any], keep: int = 2, world: World = SINGLE
) -> Path:
    """Write ``state`` as ``root/iter_<iteration>/`` and keep the newest ``keep`` checkpoints.

    Raises :class:`DivergedError` (writing nothing) when a floating-point tensor of the state
    is not finite, and :class:`CheckpointError` (removing the partial files, keeping the
    previous checkpoints) when the disk is full or the write fails. With
    ``world.sharded_checkpoints`` every process calls it (a collective: each writes its
    shards, every process raises the same error).
    """
    root = Path(root)
    sharded = world.sharded_checkpoints and world.parallel
    tree, tensors = encode(state)
    bad = non_finite(tensors)
    if sharded:
        bad = [name for names in gather(bad, world) for name in names]
    if bad:
        raise DivergedError(
            f"refusing to checkpoint iteration {iteration}: {len(bad)} tensors hold NaN or inf "
            f"(e.g. {bad[0]}); the previous checkpoint in {root} is kept"
        )
    final = root / f"{_PREFIX}{iteration:06d}"
    tmp = root / f".{final.name}.tmp"
    meta = {"format": FORMAT, "iteration": int(iteration), "state": tree}

    def step(write: Callable[[], Any]) -> list[Any]:
        """``write``'s result on every process, or every process raises the same error (a
        collective when sharded: every process hears of any process's failure)."""
        done = _written(iteration, final, root, write)
        outcomes = gather(done, world) if sharded else [done]
        failures = [f for f, _ in outcomes if f is not None]
        if failures:
            if world.is_main:
                shutil.rmtree(tmp, ignore_errors=True)
            raise CheckpointError(failures[0])
        return [result for _, result in outcomes]

    if sharded:
        meta["processes"] = world.size
        mine = tensors if world.is_main else {k: tensors[k] for k in shard_names(tree)}
        step(lambda: _fresh(tmp) if world.is_main else None)
        written = step(lambda: _write_tensors(tmp, world.rank, mine))
        meta["files"] = {k: v for files in written for k, v in files.items()}
        step(lambda: _commit(tmp, final, meta) if world.is_main else None)
    else:

        def write_all() -> None:
            _fresh(tmp)
            meta["files"] = _write_tensors(tmp, 0, tensors)
            _commit(tmp, final, meta)

        step(write_all)
    if world.is_main:
        for old in checkpoints(root)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    return final


def _fresh(tmp: Path) -> None:
    """An empty temporary checkpoint folder (its parent made)."""
    tmp.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()


def _write_tensors(folder: Path, rank: int, tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Write process ``rank``'s tensors file into ``folder``; its ``{name: size and sha256}``
    (hashed after writing: safetensors writes the file itself; the bytes are read back from
    the page cache)."""
    path = folder / tensor_file(rank)
    save_file(tensors, str(path))
    return {path.name: file_entry(path)}


def _commit(tmp: Path, final: Path, meta: dict[str, Any]) -> None:
    """``state.json`` (ending with the digest of its own text) written and synced last,
    then the folder renamed into place."""
    with (tmp / "state.json").open("w") as f:
        f.write(sealed(meta))
        f.flush()
        os.fsync(f.fileno())
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)


def _written(iteration: int, final: Path, root: Path, write) -> tuple[str | None, Any]:
    """Run ``write``: ``(None, its result)``, or ``(the message of the CheckpointError its
    OSError means (a full disk said as such), None)``."""
    try:
        return None, write()
    except OSError as err:
        if err.errno == errno.ENOSPC or "No space left" in str(err):
            free = shutil.disk_usage(root if root.exists() else root.parent).free
            return (
                f"the disk is full: could not write the checkpoint of iteration {iteration} to "
                f"{final} ({free / 2**20:.0f} MiB free there); the partial files were removed and "
                "the previous checkpoint is kept. Free some space, then resume with --resume"
            ), None
        return f"could not write the checkpoint {final}: {err}", None


def checkpoints(root: str | Path) -> list[Path]:
    """The complete checkpoint folders under ``root``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [
        p
        for p in root.iterdir()
        if p.is_dir()
        and p.name.startswith(_PREFIX)
        and (p / "state.json").is_file()
        and (p / "tensors.safetensors").is_file()
    ]
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
    """The newest complete checkpoint under ``root`` (None if there is none), unverified."""
    refuse_pickles(root)
    found = checkpoints(root)
    return found[-1] if found else None


def checkpoint_folders(root: str | Path) -> list[Path]:
    """Every ``iter_<N>`` folder under ``root``, complete or not, oldest first (what a
    resume examines; set-aside and temporary folders are not among them)."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(_PREFIX))


def intact_checkpoint(root: str | Path, say: Callable[[str], Any] = print) -> Path | None:
    """The newest checkpoint under ``root`` that verifies (None: there is none at all).
    The damaged ones newer than it are set aside (renamed ``damaged-iter_<N>``) and ``say``
    gets one line naming each and why; when none verifies, nothing is renamed and a
    :class:`CheckpointError` names every checkpoint's damaged file."""
    root = Path(root)
    refuse_pickles(root)
    damaged: list[tuple[Path, str]] = []
    for path in reversed(checkpoint_folders(root)):
        reason = verified(path)[1]
        if reason is None:
            skipped = [
                f"skipping checkpoint {bad.name}: {why} (set aside as {_set_aside(bad, why).name})"
                for bad, why in damaged
            ]
            if skipped:
                say(f"{'; '.join(skipped)}; resuming from {path.name}")
            return path
        damaged.append((path, reason))
    if damaged:
        raise CheckpointError(
            f"no intact checkpoint to resume from in {root}: "
            + "; ".join(f"{bad.name}/{why}" for bad, why in damaged)
            + ". Nothing was renamed: restore those files (from a copy), or start a new run "
            "with another --output-dir"
        )
    return None


def _set_aside(path: Path, reason: str) -> Path:
    """Rename the damaged checkpoint ``path`` to ``damaged-<name>`` (``-2``, ``-3`` ... when
    taken), with ``reason.txt`` in it."""
    target, n = path.with_name(_ASIDE + path.name), 2
    while target.exists():
        target, n = path.with_name(f"{_ASIDE}{path.name}-{n}"), n + 1
    try:
        path.rename(target)
    except OSError as err:
        raise CheckpointError(
            f"cannot set aside the damaged checkpoint {path} ({reason}): {err}"
        ) from err
    with contextlib.suppress(OSError):
        (target / "reason.txt").write_text(reason + "\n")
    return target


def load_checkpoint(path: str | Path, world: World = SINGLE) -> tuple[int, dict[str, Any]]:
    """``(iteration, state)`` of the checkpoint folder ``path`` (JSON and safetensors only),
    verified first (:func:`verify_checkpoint`, the files this process reads); a sharded
    one's :class:`~agents.distributed.Shard` entries are this process's (it must have as
    many processes as wrote it)."""
    path = Path(path)
    refuse_pickles(path)
    meta, reason = verified(path, only={tensor_file(0), tensor_file(world.rank)})
    if reason is not None:
        raise CheckpointError(f"cannot read the checkpoint {path}: {reason}")
    try:
        if "processes" not in meta:  # written whole, by one process
            return int(meta["iteration"]), decode(
                meta["state"], load_file(str(path / tensor_file(0)))
            )
        written_by = int(meta["processes"])
        if written_by != world.size:
            raise CheckpointError(
                f"{path} is a sharded checkpoint written by {written_by} processes (FSDP's "
                f"SHARDED_STATE_DICT); this run has {world.size}: resume it with {written_by} processes"
            )
        names = set(shard_names(meta["state"]))
        with safe_open(
            str(path / tensor_file(0)), framework="pt"
        ) as f:  # what is not this process's shard
            tensors = {k: f.get_tensor(k) for k in f.keys() if world.is_main or k not in names}  # noqa: SIM118
        shards = tensors if world.is_main else load_file(str(path / tensor_file(world.rank)))
    except (OSError, ValueError, KeyError, SafetensorError) as err:
        raise CheckpointError(f"cannot read the checkpoint {path}: {err}") from err
    missing = names - set(shards)
    if missing:
        raise CheckpointError(
            f"{path / tensor_file(world.rank)} lacks {len(missing)} shards "
            f"(e.g. {sorted(missing)[0]})"
        )
    return int(meta["iteration"]), decode(meta["state"], tensors, shards)


def rng_state() -> dict[str, Any]:
    """The global RNG states (python, numpy, torch) for the checkpoint."""
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
