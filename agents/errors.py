"""The errors a run expects and reports as one clear line (the CLI prints them without a
traceback; ``--debug`` shows it)."""

from __future__ import annotations

import re

__all__ = [
    "CheckpointError",
    "DivergedError",
    "PeerLostError",
    "ResumeError",
    "RunError",
    "Stopped",
]


class RunError(Exception):
    """Base of the errors a user can act on; the message says what to do."""


class CheckpointError(RunError):
    """A checkpoint could not be written or read (full disk, unsafe or broken files)."""


class ResumeError(RunError, ValueError):
    """``--resume`` cannot continue this run as asked (changed fixed settings, fewer
    iterations than done, ...)."""


class DivergedError(RunError):
    """Training diverged: non-finite losses, gradients, logits or weights."""


class PeerLostError(RunError):
    """A process of a data-parallel run died or stopped answering a collective
    (:func:`agents.distributed.peer_lost`): this one stops too, its run folder resumable from
    the newest checkpoint."""

    @classmethod
    def of(cls, err: BaseException, timeout: float) -> PeerLostError | None:
        """This process's error where ``err``, a collective's in a process group of several,
        says a peer was lost (gloo's "Connection closed by peer" once a process died, "Timed
        out waiting" after ``timeout`` seconds); None for any other error."""
        import torch.distributed as dist

        found = _PEER_LOST.search(str(err)) if isinstance(err, RuntimeError) else None
        if found is None or not (dist.is_available() and dist.is_initialized()):
            return None
        rank, size = dist.get_rank(), dist.get_world_size()
        if size < 2:
            return None
        peer = f"rank {1 - rank}" if size == 2 else f"one of the other {size - 1}"
        what = (
            f"a peer process ({peer}) died: its connection closed during a collective"
            if found["died"]
            else f"a peer process ({peer}) did not answer within --collective-timeout {timeout:g} "
            "s (it died or hung; if it was only slow, raise --collective-timeout)"
        )
        return cls(
            f"{what}; this process (rank {rank}) stops too. The run folder is resumable from its "
            "newest checkpoint: rerun the same launch with --resume"
        )


_PEER_LOST = re.compile(
    r"(?P<died>(closed|reset) by peer|broken pipe|connection refused)|timed out|timeout", re.I
)


class Stopped(RunError):
    """The run was stopped by a signal (SIGINT / SIGTERM) after writing a checkpoint."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum
