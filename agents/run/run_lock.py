"""One writer per run folder: an advisory lock on ``RUN/.lock`` held for the run's life.

A run takes the lock (:func:`hold_run_folder`) before it writes anything into its folder
(:func:`agents.run.resume.check_output`, process 0 only in a data-parallel run) and the
loop lets it go when the run ends (:func:`release_run_folder`). A second process starting
or resuming the same folder is refused at once with :class:`FolderInUse`, whose message
names the process holding it (pid, host, command line: what the holder wrote into the
lock file). The lock is ``flock(2)``: the kernel drops it when the holder's process ends
however it ends, so a ``kill -9`` leaves no stale lock, and the file itself stays (it is
never the lock, only where the holder is named). Within one process the lock is taken
once per folder and taking it again is a no-op, so a trainer built and then trained, or
several runs of one folder in a row in a notebook, do not refuse themselves. A build that
fails after the lock was taken keeps it until the process ends or
:func:`release_run_folder`. Where ``fcntl`` is missing (Windows) there is no lock.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import warnings
from pathlib import Path

from agents.errors import RunError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["LOCK_FILE", "FolderInUse", "hold_run_folder", "release_run_folder"]

LOCK_FILE = ".lock"
_COMMAND_CHARS = 200
"""How much of the holder's command line the refusal quotes."""

_held: dict[Path, int] = {}
"""The folders this process holds (resolved path -> the lock file's descriptor)."""


class FolderInUse(RunError):
    """Another process holds the run folder's lock: it is training or resuming there."""


def hold_run_folder(folder: str | Path) -> None:
    """Take ``folder``'s lock (creating the folder) without waiting, and name this process
    in the lock file; raises :class:`FolderInUse` naming the holder when another process
    has it. A no-op where this process holds it already."""
    key = Path(folder).resolve()
    if key in _held or fcntl is None:
        return
    key.mkdir(parents=True, exist_ok=True)
    fd = os.open(key / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd)
        os.close(fd)
        raise FolderInUse(
            f"run folder {folder} is in use by {holder}: wait for it to finish, or pass "
            "another --output-dir"
        ) from None
    except OSError as err:  # a filesystem without locks (some network mounts)
        os.close(fd)
        warnings.warn(
            f"cannot lock {key / LOCK_FILE} ({err}): nothing keeps a second process from "
            "writing this run folder at the same time",
            stacklevel=2,
        )
        return
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(_me()).encode(), 0)
    _held[key] = fd


def release_run_folder(folder: str | Path) -> None:
    """Let ``folder``'s lock go (its holder's name cleared); a no-op where this process
    does not hold it."""
    fd = _held.pop(Path(folder).resolve(), None)
    if fd is None:
        return
    try:
        os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # closing the descriptor drops the flock


def _me() -> dict[str, object]:
    """What the lock file says of its holder."""
    argv = getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv]
    return {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(argv)}


def _holder(fd: int) -> str:
    """The holder as its lock file names it: ``process <pid> on <host> (<command>)``."""
    try:
        info = json.loads(os.pread(fd, 65536, 0).decode())
        command = " ".join(str(info["command"]).split())
        if len(command) > _COMMAND_CHARS:
            command = command[: _COMMAND_CHARS - 3] + "..."
        return f"process {int(info['pid'])} on {info['host']} ({command})"
    except (OSError, ValueError, KeyError, TypeError):  # taken an instant ago, not yet named
        return "another process"
