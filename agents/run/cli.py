"""The CLI shared by the run scripts: a tyro parser over :class:`agents.run.config.TrainConfig`
whose ``--help`` shows the flags in :data:`agents.run.config.FLAG_GROUPS`'s groups (the config
stays flat: the groups are parse-time dataclasses, flattened back), with the defaults
supplied by ``--preset``, then ``--config FILE``, or on ``--resume`` by the run's saved
config, which explicit flags then override; one-line errors; the summary a run prints."""

from __future__ import annotations

import dataclasses
import functools
import sys
import traceback
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import tyro

from agents.distributed import leave, peer_lost, world
from agents.errors import RunError, Stopped
from agents.run.config import FLAG_GROUPS, PRESETS, RUN_RECORD, TrainConfig, preset_config
from agents.run.metrics import eval_key
from agents.run.resume import saved_config
from agents.run.run_lock import FolderInUse
from agents.run.schema import field_docs, read_settings

CONFIG_FLAG_HELP = (
    "A YAML or JSON file of settings (``field: value``; a run's saved config.json "
    "is one), over the --preset's; explicit flags override it."
)
"""The help of ``--config``: a flag of the parser only (the file's values are the config's)."""


def _peek(argv: list[str], flag: str) -> str | None:
    """The value of ``flag`` in ``argv`` (``--flag v`` or ``--flag=v``), if given."""
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def _one_line(doc: str | None) -> str | None:
    """A field's docstring folded onto one line (the ``--help`` text)."""
    return None if doc is None else " ".join(doc.split())


@functools.cache
def _grouped_flags() -> type:
    """The parse-time dataclass: one nested dataclass per flag group (tyro draws each as a
    group and, with ``OmitArgPrefixes``, keeps the flat flag names), plus ``--config``."""
    hints = typing.get_type_hints(TrainConfig, include_extras=True)
    choices = ("none", *PRESETS)
    hints["preset"] = Literal.__getitem__(choices)  # the choices: the preset files
    docs, default = field_docs(TrainConfig), TrainConfig()
    groups = []
    for title, names in FLAG_GROUPS.items():
        own = [
            (
                n,
                Annotated[hints[n], tyro.conf.arg(help=_one_line(docs.get(n)))],
                dataclasses.field(default=getattr(default, n)),
            )
            for n in names
        ]
        if title == "run and logging":
            own.insert(
                0,
                (
                    "config",
                    Annotated[str | None, tyro.conf.arg(help=CONFIG_FLAG_HELP)],
                    dataclasses.field(default=None),
                ),
            )
        group = dataclasses.make_dataclass(_slug(title), own)
        groups.append(
            (_slug(title), Annotated[group, tyro.conf.OmitArgPrefixes, tyro.conf.arg(name=title)])
        )
    return dataclasses.make_dataclass("Flags", groups)


def _slug(title: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in title.lower())


def parse(description: str, argv: list[str] | None = None, **defaults) -> TrainConfig:
    """Parse ``argv`` (default: the command line) into a config.

    Defaults come from ``--preset`` (then ``defaults``), then the ``--config`` file's
    settings; with ``--resume`` they come from the run's saved ``config.json`` (then the
    file), so that only the flags given anew differ from the run (and
    :mod:`agents.run.resume` decides whether they may). Bad values exit with the CLI's
    usage error.
    """
    argv = sys.argv[1:] if argv is None else argv
    file = _peek(argv, "--config")
    try:
        default = _defaults(argv, file, defaults)
    except ValueError as err:
        _usage_error(str(err))
    parsed = tyro.cli(
        _grouped_flags(), default=_as_flags(default, file), args=argv, description=description
    )
    return TrainConfig(
        **{
            f.name: getattr(group, f.name)
            for group in vars(parsed).values()
            for f in dataclasses.fields(group)
            if f.name != "config"
        }
    )


def _defaults(argv: list[str], file: str | None, defaults: dict) -> TrainConfig:
    """The config the flags override: the preset's (then ``defaults``), then the file's; on
    ``--resume`` the run's saved one, then the file's."""
    settings = read_settings(file, TrainConfig, ignore=RUN_RECORD) if file else {}
    given = _peek(argv, "--preset")
    preset = settings.pop("preset", "none")
    preset = given or preset
    if preset not in ("none", *PRESETS):
        where, what = ("", "--preset") if given else (f"{file}: ", "preset")
        raise ValueError(
            f"{where}unknown {what} {preset!r}; choose one of: none, {', '.join(PRESETS)}"
        )
    try:
        default = preset_config(preset, **{**defaults, **settings})
        if "--resume" in argv or (default.resume and "--no-resume" not in argv):
            out = Path(_peek(argv, "--output-dir") or default.output_dir)
            if (out / "config.json").is_file():
                known = {f.name for f in dataclasses.fields(TrainConfig)}
                saved = {k: v for k, v in saved_config(out).items() if k in known}
                default = TrainConfig(**{**saved, **settings})
    except ValueError as err:
        raise ValueError(f"{file}: {err}" if file else str(err)) from None
    return default


def _as_flags(config: TrainConfig, file: str | None) -> Any:
    """``config`` (and the ``--config`` file's name) as the parse-time dataclass's instance."""
    flags = _grouped_flags()
    groups = {}
    for f in dataclasses.fields(flags):
        group = typing.get_args(f.type)[0]
        values = {
            g.name: file if g.name == "config" else getattr(config, g.name)
            for g in dataclasses.fields(group)
        }
        if "dtype" in values and getattr(config, "dtype_was_auto", False):
            values["dtype"] = "auto"  # resolved again with the flags' device and mode
        groups[f.name] = group(**values)
    return flags(**groups)


def _usage_error(message: str) -> None:
    print(f"usage error: {message}", file=sys.stderr)
    raise SystemExit(2)


EXPECTED = (RunError, ValueError, TypeError, OSError, RuntimeError)
"""Errors the CLIs report as one line: bad input (values, types), missing or unwritable
files, failed resumes, a full disk, a diverged run, a missing CUDA device, a lost peer
process (:func:`agents.distributed.peer_lost`)."""


def run_main(
    main: Callable[[list[str]], Any], argv: list[str] | None = None, output_dir: str = "runs/cory"
) -> int:
    """Run a script's ``main(argv)`` and turn the errors a user can act on into one line
    (exit code 1; a signal's stop: 128 + its number). The traceback goes to the run
    folder's ``error.log``; ``--debug`` prints it instead."""
    argv = sys.argv[1:] if argv is None else argv
    out = Path(_peek(argv, "--output-dir") or output_dir)
    try:
        w = world()
        if w.is_main:  # the world size the run has, not the one its flags asked for
            kind = (
                f"data-parallel, {w.kind}{', FSDP' if w.fsdp else ''}"
                if w.parallel
                else "one process"
            )
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
        said = peer_lost(err) or err  # also a collective outside agents.distributed (FSDP's)
        where = ""
        if out.is_dir() and not isinstance(err, FolderInUse):  # the folder is another's
            log = out / "error.log"
            with log.open("a") as f:
                traceback.print_exc(file=f)
            where = f" (traceback in {log}; --debug prints it)"
        print(f"error: {said}{where}", file=sys.stderr)
        return 1
    return 0


def train_from_cli(
    trainer_cls: Callable[[TrainConfig], Any],
    description: str,
    argv: list[str] | None = None,
    **defaults,
) -> list[dict]:
    """A run script's ``main``: parse ``argv`` (:func:`parse`, ``defaults`` under the flags),
    train a ``trainer_cls`` on that config, and print the summary on the main process."""
    config = parse(description, argv, **defaults)
    trainer = trainer_cls(config)
    rows = trainer.train()
    if trainer.world.is_main:
        summarize(rows, trainer.models, config.output_dir)
    return rows


def summarize(rows: list[dict], models, output_dir: str) -> None:
    """Print the first and last evaluation of each model, and where the run is."""
    evals = [r for r in rows if any(k.startswith("eval/") for k in r)]
    if evals:
        first, last = evals[0], evals[-1]
        print(
            f"\nevaluation alone on held-out queries (iteration {first['iteration']} -> {last['iteration']}):"
        )
        for m in models:
            reward, kl = eval_key(m, "reward"), eval_key(m, "kl")
            print(
                f"  {m:8s} reward {first[reward]:+.4f} -> {last[reward]:+.4f}"
                f"   KL {first[kl]:.3f} -> {last[kl]:.3f}"
            )
    print(f"run folder: {output_dir} (metrics.csv, samples.jsonl, plots/, checkpoints/)")
