"""The CLI shared by the run scripts: a tyro parser over :class:`agents.config.TrainConfig`,
with ``--preset`` supplying the defaults that explicit flags then override."""

from __future__ import annotations

import sys

import tyro

from agents.config import TrainConfig, preset_config


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
