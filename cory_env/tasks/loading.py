"""Loading task data: local CSV/JSON/JSONL/Parquet files, the Hugging Face hub, seeded splits.

Local files are read without pandas (``csv``/``json`` from the standard library, Parquet
through ``pyarrow``, which ``datasets`` already depends on). Hub datasets go through
``datasets.load_dataset``; any failure there (no network, unknown name) becomes a
:class:`DataUnavailableError` that tells the user to pass ``path=`` instead.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")

SUPPORTED_EXTENSIONS = (".csv", ".json", ".jsonl", ".parquet")


class DataUnavailableError(RuntimeError):
    """A dataset could not be loaded from the hub (no network, or the hub refused)."""


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a local ``.csv``, ``.json``, ``.jsonl`` or ``.parquet`` file, as dicts.

    A ``.json`` file may hold a list of records, a dict of columns, a single record, or
    (as ``datasets`` writes them) one record per line.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"data file not found: {p}")
    ext = p.suffix.lower()
    if ext == ".csv":
        with p.open(newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    if ext == ".jsonl":
        return _read_jsonl(p)
    if ext == ".json":
        text = p.read_text(encoding="utf-8")
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            return _read_jsonl(p)
        return _records_from_json(data, p)
    if ext == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(p).to_pylist()
    raise ValueError(
        f"unsupported data file extension {p.suffix!r} for {p}; "
        f"expected one of {', '.join(SUPPORTED_EXTENSIONS)}"
    )


def _read_jsonl(p: Path) -> list[dict[str, Any]]:
    rows = []
    with p.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{p}:{lineno}: invalid JSON line ({exc})") from exc
    return [_as_record(r, p) for r in rows]


def _records_from_json(data: Any, p: Path) -> list[dict[str, Any]]:
    if isinstance(data, list):
        return [_as_record(r, p) for r in data]
    if isinstance(data, dict):
        if data and all(isinstance(v, list) for v in data.values()):  # dict of columns
            n = len(next(iter(data.values())))
            if any(len(v) != n for v in data.values()):
                raise ValueError(f"{p}: columns of different lengths")
            return [{k: v[i] for k, v in data.items()} for i in range(n)]
        return [data]
    raise ValueError(f"{p}: expected JSON records (a list of objects), got {type(data).__name__}")


def _as_record(row: Any, p: Path) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise ValueError(f"{p}: expected JSON objects (records), got {type(row).__name__}")
    return row


def pick_column(
    records: Sequence[dict[str, Any]], candidates: Sequence[str], source: object
) -> str:
    """The first of ``candidates`` present in the records (clear error if none is)."""
    if not records:
        raise ValueError(f"{source}: no rows")
    keys = records[0].keys()
    for name in candidates:
        if name in keys:
            return name
    raise ValueError(
        f"{source}: no {' or '.join(repr(c) for c in candidates)} column "
        f"(columns: {', '.join(map(str, keys)) or 'none'})"
    )


def load_hub(name: str, config: str | None = None, split: str = "train") -> list[dict[str, Any]]:
    """Rows of a hub dataset split via ``datasets.load_dataset``; :class:`DataUnavailableError`
    (saying to pass ``path=``) when it cannot be reached."""
    import datasets

    try:
        ds = datasets.load_dataset(name, config, split=split)
    except Exception as exc:
        raise DataUnavailableError(
            f"could not load {name!r} (split {split!r}) from the Hugging Face hub "
            f"({type(exc).__name__}: {exc}). Without network access, pass path= a local "
            "CSV/JSON/JSONL/Parquet file."
        ) from exc
    return list(ds)


def split_items(items: Sequence[T], eval_fraction: float, seed: int) -> tuple[list[T], list[T]]:
    """A seeded shuffle of ``items`` cut into (train, eval); eval gets ``round(fraction*n)``
    items, train always at least one."""
    if not 0.0 <= eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be in [0, 1), got {eval_fraction}")
    if not items:
        raise ValueError("no items to split")
    order = np.random.default_rng(seed).permutation(len(items))
    n_eval = min(round(eval_fraction * len(items)), len(items) - 1)
    shuffled = [items[i] for i in order]
    return shuffled[n_eval:], shuffled[:n_eval]


def check_limit(limit: int | None) -> int | None:
    """Validate a ``limit=`` argument (``None`` or a positive int)."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive int or None, got {limit!r}")
    return limit
