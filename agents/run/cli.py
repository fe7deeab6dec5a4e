"""The CLI shared by the run scripts: a tyro parser over :class:`agents.run.config.TrainConfig`
(``--preset``, or on ``--resume`` the run's saved config, supplying the defaults that explicit
flags then override), one-line errors, and the summary a run prints at its end."""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

import tyro

from agents.distributed import leave, world
from agents.errors import RunError, Stopped
from agents.run.config import PRESETS, TrainConfig, preset_config
from agents.run.metrics import eval_key
from agents.run.resume import saved_config


def _peek(argv: list[str], flag: str) -> str | None:
    """The value of ``flag`` in ``argv`` (``--flag v`` or ``--flag=v``), if given."""
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def parse(description: str, argv: list[str] | None = None, **defaults) -> TrainConfig:
    """Parse ``argv`` (default: the command line) into a config.

    Defaults come from ``--preset`` (then ``defaults``); with ``--resume`` they come from
    the run's saved ``config.json``, so that only the flags given anew differ from the run
    (and :mod:`agents.run.resume` decides whether they may). Bad values exit with the
    CLI's usage error.
    """
    argv = sys.argv[1:] if argv is None else argv
    preset = _peek(argv, "--preset") or "none"
    if preset not in ("none", *PRESETS):
        _usage_error(f"unknown --preset {preset!r}; choose one of: none, {', '.join(PRESETS)}")
    try:
        default = preset_config(preset, **defaults)
        if "--resume" in argv:
            out = Path(_peek(argv, "--output-dir") or default.output_dir)
            if (out / "config.json").is_file():
                known = {f.name for f in fields(TrainConfig)}
                saved = {k: v for k, v in saved_config(out).items() if k in known}
                default = TrainConfig(**saved)
    except ValueError as err:
        _usage_error(str(err))
    return tyro.cli(TrainConfig, default=default, args=argv, description=description)


def _usage_error(message: str) -> None:
    print(f"usage error: {message}", file=sys.stderr)
    raise SystemExit(2)


EXPECTED = (RunError, ValueError, TypeError, OSError, RuntimeError)
"""Errors the CLIs report as one line: bad input (values, types), missing or unwritable
files, failed resumes, a full disk, a diverged run, a missing CUDA device."""


def run_main(main: Callable[[list[str]], Any], argv: list[str] | None = None,
             output_dir: str = "runs/cory") -> int:
    """Run a script's ``main(argv)`` and turn the errors a user can act on into one line
    (exit code 1; a signal's stop: 128 + its number). The traceback goes to the run
    folder's ``error.log``; ``--debug`` prints it instead."""
    argv = sys.argv[1:] if argv is None else argv
    out = Path(_peek(argv, "--output-dir") or output_dir)
    try:
        w = world()
        if w.is_main:  # the world size the run has, not the one its flags asked for
            kind = f"data-parallel, {w.kind}{', FSDP' if w.fsdp else ''}" if w.parallel else "one process"
            print(f"world size {w.size} ({kind})", flush=True)
        main(argv)
        leave(w)
    except Stopped as err:
        print(str(err), file=sys.stderr)
        return 128 + err.signum
    except KeyboardInterrupt:
        print("interrupted before training started: nothing to resume", file=sys.stderr)
        return 130
    except EXPECTED as err:
        if "--debug" in argv:
            raise
        where = ""
        if out.is_dir():
            log = out / "error.log"
            with log.open("a") as f:
                traceback.print_exc(file=f)
            where = f" (traceback in {log}; --debug prints it)"
        print(f"error: {err}{where}", file=sys.stderr)
        return 1
    return 0


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
