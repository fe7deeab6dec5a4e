"""What ``--resume`` may change: the saved config is the run's config; a few settings may be
given anew (they are applied and recorded), every other difference is refused before
anything loads, field by field. Before anything is read or written, the run takes its
folder's lock (:mod:`agents.run.run_lock`); on resume it continues from the newest
checkpoint that verifies (:func:`agents.run.checkpoint.intact_checkpoint`)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

from agents.distributed import World, gather
from agents.errors import ResumeError, RunError
from agents.policy.loading import DTYPES
from agents.run.checkpoint import (
    checkpoint_dir,
    checkpoint_folders,
    intact_checkpoint,
    refuse_pickles,
)
from agents.run.run_lock import hold_run_folder

T = TypeVar("T")

__all__ = ["CHANGEABLE", "check_output", "check_resume", "saved_config"]

CHANGEABLE = frozenset(
    {
        "iterations",
        "eval_every",
        "checkpoint_every",
        "keep_checkpoints",
        "num_samples",
        "progress",
        "debug",
        "resume",
        "learning_rate",
        "target",
        "target_kl",
        "max_nonfinite_steps",
        "log_with",
        "wandb_project",
        "wandb_group",
        "wandb_mode",
        "collective_timeout",
        "output_dir",
    }
)
"""Settings a resumed run may change: the schedule's length, evaluation and checkpoint
cadence, logging (progress, TensorBoard, wandb), the learning rate, the KL targets, the
collective timeout and the folder itself (a moved run folder resumes). Everything else (model, mode, LoRA
shape, task, reward, batch and mini-batch sizes, seed, learners, generation ...) is fixed
for the life of a run."""


def saved_config(output_dir: str | Path) -> dict[str, Any]:
    """The run's ``config.json``; a clear error if it is missing or damaged."""
    path = Path(output_dir) / "config.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ResumeError(f"{path} is missing: the run's config is needed to resume it") from None
    except json.JSONDecodeError as err:
        raise ResumeError(f"{path} is damaged ({err.msg}): cannot resume this run") from err


def check_resume(saved: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{field: (old, new)}`` of the changeable settings that differ; raises
    :class:`ResumeError` listing every fixed field that differs (old -> new)."""
    fixed, changed = [], {}
    for name in sorted(set(saved) & set(new)):
        old, value = saved[name], json.loads(json.dumps(new[name]))  # tuples as the JSON's lists
        if old == value:
            continue
        if name in CHANGEABLE:
            if name != "resume":
                changed[name] = (old, value)
        else:
            fixed.append(f"{name}: {old!r} -> {value!r}")
    if fixed:
        raise ResumeError(
            "--resume cannot change these settings of the run (they are fixed for its life): "
            + "; ".join(fixed)
            + ". Drop those flags to continue the run as it was, or start a "
            "new run with another --output-dir"
        )
    return changed


def check_output(config: Any, world: World) -> tuple[Path | None, dict[str, tuple[Any, Any]]]:
    """Refuse an output folder this config cannot use, before anything loads: a file; a
    folder another process runs in (its lock, taken here and held for the run); a run there
    without ``--resume``; on resume, no intact checkpoint, another number of processes than
    ``world``'s, changed fixed settings or fewer iterations than done (a dtype left
    ``auto`` takes the run's recorded one). Returns the newest
    intact checkpoint (None: the run starts from scratch; damaged newer ones are set aside,
    saying so) and the changeable settings that differ from the saved config
    (:func:`check_resume`). Process 0 takes the lock and picks the checkpoint; every
    process gets its answer or its error."""
    out = Path(config.output_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--output-dir {out} is a file, not a folder: choose another path")
    latest = _on_main(lambda: _newest(out, bool(config.resume)), world)
    if latest is None:
        return None, {}
    saved = saved_config(out)
    size, had = world.size, int(saved.get("num_processes", 1))
    if size != had:
        raise ResumeError(
            f"{out} was run by {had} process(es) and this run has {size}: resume it "
            f"with {had} (each process's random stream is in the checkpoint)"
        )
    if getattr(config, "dtype_was_auto", False) and saved.get("dtype") in DTYPES:
        config.dtype = saved["dtype"]  # ``auto`` resolved when the run began: it stays on it
    changes = check_resume(saved, asdict(config))
    done = int(latest.name.split("_")[-1])
    if config.iterations < done:
        raise ResumeError(
            f"--iterations {config.iterations} is below the {done} iterations the "
            f"checkpoint {latest} has done: pass --iterations {done} or more"
        )
    return latest, changes


def _newest(out: Path, resume: bool) -> Path | None:
    """Take ``out``'s lock; the checkpoint a run there starts from (None: none), refusing a
    run there without ``resume``."""
    hold_run_folder(out)
    root = checkpoint_dir(out)
    if not resume:
        refuse_pickles(root)
        found = checkpoint_folders(root)
        if found:
            raise FileExistsError(
                f"{out} already holds a run (checkpoint {found[-1].name}); pass --resume to "
                "continue it or choose another --output-dir"
            )
        return None
    return intact_checkpoint(root, say=lambda line: print(line, flush=True))


def _on_main(decide: Callable[[], T], world: World) -> T:
    """``decide()`` run on process 0; its answer, or its error (the same type and message),
    every process's."""
    if not world.parallel:
        return decide()
    outcome: tuple[Any, ...] = ()
    if world.is_main:
        try:
            outcome = ("answer", decide())
        except Exception as err:
            gather(("error", type(err), str(err)), world)
            raise
    outcome = gather(outcome, world)[0]
    if outcome[0] == "answer":
        return outcome[1]
    try:
        error = outcome[1](outcome[2])
    except TypeError:  # an error type that takes more than a message
        error = RunError(outcome[2])
    raise error
