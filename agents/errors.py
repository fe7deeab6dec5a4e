"""The errors a run expects and reports as one clear line (the CLI prints them without a
traceback; ``--debug`` shows it)."""

from __future__ import annotations

__all__ = ["CheckpointError", "DivergedError", "ResumeError", "RunError", "Stopped"]


class RunError(Exception):
    """Base of the errors a user can act on; the message says what to do."""


class CheckpointError(RunError):
    """A checkpoint could not be written or read (full disk, unsafe or broken files)."""


class ResumeError(RunError, ValueError):
    """``--resume`` cannot continue this run as asked (changed fixed settings, fewer
    iterations than done, ...)."""


class DivergedError(RunError):
    """Training diverged: non-finite losses, gradients, logits or weights."""


class Stopped(RunError):
    """The run was stopped by a signal (SIGINT / SIGTERM) after writing a checkpoint."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum
