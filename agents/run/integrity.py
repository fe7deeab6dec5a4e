"""What makes a checkpoint folder intact: every file's size and sha256 recorded in its
``state.json``, which ends with the sha256 of its own text, and the checks that read them
back (:mod:`agents.run.checkpoint` writes and loads the folders).

``state.json`` is ``{"format", "iteration", "state", ["processes"], "files": {name:
{"bytes", "sha256"}}, "state_sha256"}``; ``state_sha256`` is the last entry and the digest
of the text before it (closed with ``}``), so a byte changed anywhere in the record is
found, and the file stays plain JSON. A record without ``files`` and ``state_sha256``
(written by a version without digests) is unverified: its tensor files only need to be
whole safetensors files.

Hashing costs one read of each file, read back from the page cache after writing
(safetensors writes the file itself, so it cannot be hashed on the way out).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open

__all__ = ["FORMAT", "file_entry", "sealed", "tensor_file", "verified", "verify_checkpoint"]

FORMAT = "cory-checkpoint-1"
_SELF = "state_sha256"
"""The last entry of ``state.json``: the sha256 of its text before that entry."""
_CHUNK = 1 << 20


def tensor_file(rank: int) -> str:
    """The tensors file process ``rank`` writes into a checkpoint."""
    return "tensors.safetensors" if rank == 0 else f"tensors.rank{rank}.safetensors"


def file_entry(file: Path) -> dict[str, Any]:
    """What ``state.json`` records of ``file``: ``{"bytes", "sha256"}``."""
    return {"bytes": file.stat().st_size, "sha256": _sha256(file)}


def sealed(meta: dict[str, Any]) -> str:
    """``meta`` as ``state.json``'s text, its own sha256 the last entry."""
    text = json.dumps(meta)
    return f'{text[:-1]}, "{_SELF}": "{hashlib.sha256(text.encode()).hexdigest()}"}}'


def verify_checkpoint(path: str | Path, only: Collection[str] | None = None) -> str | None:
    """Why the checkpoint folder ``path`` is damaged (None: it is intact): ``state.json``
    missing, unreadable, unparsable or changed; a tensors file (of those named ``only``,
    default all) missing, of another size or another sha256 than recorded (unrecorded: not
    a whole safetensors file). Each reason starts with the file's name."""
    return verified(Path(path), only)[1]


def verified(path: Path, only: Collection[str] | None = None) -> tuple[dict[str, Any], str | None]:
    """``(state.json's record, None)``, or ``({}, why the checkpoint is damaged)``
    (:func:`verify_checkpoint`)."""
    meta, reason = _read_meta(path / "state.json")
    if reason is not None:
        return {}, reason
    files = meta.get("files")
    try:
        names = [tensor_file(r) for r in range(int(meta.get("processes", 1)))]
    except (TypeError, ValueError):
        return {}, "state.json records no number of processes"
    for name in names if only is None else [n for n in names if n in only]:
        entry = None if files is None else files.get(name)
        if files is not None and not isinstance(entry, dict):
            return {}, f"state.json records no digest of {name}"
        reason = _check_file(path / name, entry)
        if reason is not None:
            return {}, reason
    return meta, None


def _read_meta(file: Path) -> tuple[dict[str, Any], str | None]:
    """``state.json``'s record and None, or ``({}, why it is damaged)``."""
    try:
        text = file.read_text()
    except FileNotFoundError:
        return {}, "state.json is missing"
    except (OSError, UnicodeDecodeError) as err:
        return {}, f"state.json cannot be read ({err})"
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as err:
        return {}, f"state.json is not JSON ({err.msg} at character {err.pos})"
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        return {}, f"state.json is not a {FORMAT} record"
    if not isinstance(meta.get("iteration"), int) or "state" not in meta:
        return {}, "state.json lacks the iteration or the state"
    digest = meta.pop(_SELF, None)
    if digest is None and "files" not in meta:
        return meta, None  # written without digests: unverified
    tail = f', "{_SELF}": "{digest}"}}'
    body = text[: -len(tail)] + "}" if digest and text.endswith(tail) else ""
    if "files" not in meta or hashlib.sha256(body.encode()).hexdigest() != digest:
        return {}, "state.json changed after it was written (its sha256 differs)"
    return meta, None


def _check_file(file: Path, entry: dict[str, Any] | None) -> str | None:
    """Why the tensors file ``file`` does not match its ``entry`` (size and sha256; None:
    unrecorded, then it must be a whole safetensors file), or None."""
    if not file.is_file():
        return f"{file.name} is missing"
    if entry is None:
        try:
            with safe_open(str(file), framework="pt"):
                return None
        except (SafetensorError, OSError, ValueError) as err:
            return f"{file.name} is not a whole safetensors file ({err})"
    size = file.stat().st_size
    if size != entry.get("bytes"):
        return f"{file.name} is {size} bytes where state.json records {entry.get('bytes')}"
    if _sha256(file, remember=True) != entry.get("sha256"):
        return f"{file.name}'s sha256 differs from the one state.json records (its bytes changed)"
    return None


_DIGESTS: dict[tuple[int, ...], str] = {}
"""The sha256 of files verified in this process, by identity, size and times (a resume
verifies in its preflight, then loads: each file is read for its digest once)."""


def _sha256(file: Path, remember: bool = False) -> str:
    """``file``'s sha256, read in 1 MiB chunks (``remember``: kept for the same unchanged
    file)."""
    st = file.stat()
    key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    if remember and key in _DIGESTS:
        return _DIGESTS[key]
    h = hashlib.sha256()
    with file.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    if remember:
        _DIGESTS[key] = h.hexdigest()
    return h.hexdigest()
