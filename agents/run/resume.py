"""What ``--resume`` may change: the saved config is the run's config; a few settings may be
given anew (they are applied and recorded), every other difference is refused before
anything loads, field by field."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from agents.distributed import World
from agents.errors import ResumeError
from agents.run.checkpoint import checkpoint_dir, latest_checkpoint

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
    }
)
"""Settings a resumed run may change: the schedule's length, evaluation and checkpoint
cadence, logging (progress, TensorBoard, wandb), the learning rate and the KL targets. Everything else (model, mode, LoRA
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
    run there without ``--resume``; on resume, another number of processes than ``world``'s,
    changed fixed settings or fewer iterations than done. Returns the newest checkpoint (None: the run starts from scratch) and the
    changeable settings that differ from the saved config (:func:`check_resume`)."""
    out = Path(config.output_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--output-dir {out} is a file, not a folder: choose another path")
    latest = latest_checkpoint(checkpoint_dir(out))
    if latest is None:
        return None, {}
    if not config.resume:
        raise FileExistsError(
            f"{out} already holds a run (checkpoint {latest.name}); pass --resume to continue "
            "it or choose another --output-dir"
        )
    saved = saved_config(out)
    size, had = world.size, int(saved.get("num_processes", 1))
    if size != had:
        raise ResumeError(
            f"{out} was run by {had} process(es) and this run has {size}: resume it "
            f"with {had} (each process's random stream is in the checkpoint)"
        )
    changes = check_resume(saved, asdict(config))
    done = int(latest.name.split("_")[-1])
    if config.iterations < done:
        raise ResumeError(
            f"--iterations {config.iterations} is below the {done} iterations the "
            f"checkpoint {latest} has done: pass --iterations {done} or more"
        )
    return latest, changes
