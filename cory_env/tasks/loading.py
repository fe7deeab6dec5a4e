"""Loading task data: local CSV/JSON/JSONL/Parquet files, the Hugging Face hub, seeded splits.

Local files are read by pyarrow (which ``datasets`` is built on), as its CSV, JSON lines and
Parquet readers read them: any valid file loads, whatever its field sizes (one block holds
the whole file, so a field of many megabytes is one field), quoting (quoted commas and
newlines), encoding (UTF-8 with or without a byte-order mark, which never reaches a column
name) or line endings (LF or CRLF). A CSV cell is text, as the file holds it (no number,
boolean or null guessing). A broken file raises one :class:`DataFileError` naming the file
and the row or line: an unclosed quote, a row with more or fewer fields than the header,
invalid JSON, text that is not UTF-8. A ``.json`` file holding one document (a list of
records, a dict of columns, one record) is parsed whole with ``json``, as ``datasets``'
JSON builder parses one. Hub datasets go through ``datasets.load_dataset``; any failure
there (no network, unknown name) becomes a :class:`DataUnavailableError` that tells the
user to pass ``path=`` instead.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")

SUPPORTED_EXTENSIONS = (".csv", ".json", ".jsonl", ".parquet")

_ONE_BLOCK = 2**31 - 1
"""pyarrow's largest block: a file up to this size is parsed as one block."""


class DataUnavailableError(RuntimeError):
    """A dataset could not be loaded from the hub (no network, or the hub refused)."""


class DataFileError(ValueError):
    """A local data file that cannot be read; the message names the file and, where the
    reader gives it, the row (``row``: CSV, the header is row 1) or line (``line``)."""

    def __init__(
        self, path: Path, problem: str, *, row: int | None = None, line: int | None = None
    ) -> None:
        self.path, self.row, self.line = path, row, line
        where = (
            f" row {row} (counting the header as row 1):"
            if row is not None
            else f" line {line}:"
            if line is not None
            else ""
        )
        super().__init__(f"{path}:{where} {problem}")


def is_local_path(path: str | Path) -> bool:
    """Whether ``path`` means a local file (it exists, or it has a data file's extension)
    rather than a hub dataset id such as ``user/prompts``."""
    p = Path(path).expanduser()
    return p.exists() or p.suffix.lower() in SUPPORTED_EXTENSIONS


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a local ``.csv``, ``.json``, ``.jsonl`` or ``.parquet`` file, as dicts.

    A ``.json`` file may hold a list of records, a dict of columns, a single record, or
    (as ``datasets`` writes them) one record per line. Errors: :class:`FileNotFoundError`,
    :class:`ValueError` for an unsupported extension, :class:`DataFileError` for a broken
    file.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"data file not found: {p}")
    ext = p.suffix.lower()
    if ext not in SUPPORTED_EXTENSIONS:
        raise ValueError(
            f"unsupported data file extension {p.suffix!r} for {p}; "
            f"expected one of {', '.join(SUPPORTED_EXTENSIONS)}"
        )
    if ext == ".parquet":
        return _read_parquet(p)
    data = p.read_bytes()
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    if ext == ".csv":
        return _read_csv(data, p)
    if ext == ".jsonl":
        return _read_json_lines(data, p)
    return _read_json(data, p)


def _read_parquet(p: Path) -> list[dict[str, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_table(p).to_pylist()
    except (pa.ArrowException, OSError) as error:
        raise DataFileError(p, f"not a readable Parquet file ({error})") from None


def _block(data: bytes) -> int:
    return min(max(len(data) + 1, 1 << 20), _ONE_BLOCK)


def _read_csv(data: bytes, p: Path) -> list[dict[str, Any]]:
    """Every cell as text; the header names the columns."""
    import pyarrow as pa
    import pyarrow.csv as pc

    if not data.strip():
        raise DataFileError(p, "empty file (a CSV file starts with its header row)")
    unclosed = _unclosed_quote(data)
    if unclosed is not None:
        line = data.count(b"\n", 0, unclosed) + 1
        raise DataFileError(p, "a quote opened here is never closed", line=line)
    if not data.endswith((b"\n", b"\r")):
        data += b"\n"  # a last record (or a lone header) ends at a newline
    parse = pc.ParseOptions(newlines_in_values=True)
    names: list[str] = []
    try:
        header = data[: _record_end(data)]
        names = pc.read_csv(
            pa.BufferReader(header),
            read_options=pc.ReadOptions(use_threads=False, block_size=_block(header)),
            parse_options=parse,
        ).column_names
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise DataFileError(p, f"the header names column(s) {twice} more than once")
        table = pc.read_csv(
            pa.BufferReader(data),
            read_options=pc.ReadOptions(use_threads=False, block_size=_block(data)),
            parse_options=parse,
            convert_options=pc.ConvertOptions(
                column_types={n: pa.string() for n in names},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except pa.ArrowInvalid as error:
        raise _csv_error(p, str(error), names) from None
    return table.to_pylist()


_ARROW_ROW = re.compile(r"(?:In CSV column #(\d+): )?(?:CSV parse error: )?Row #(\d+): (.*)", re.S)


def _csv_error(p: Path, message: str, names: Sequence[str]) -> DataFileError:
    """pyarrow's CSV error as a :class:`DataFileError` with its row (and column)."""
    found = _ARROW_ROW.search(message)
    if not found:
        return DataFileError(p, message)
    column, row, problem = found.groups()
    if "invalid UTF8" in problem:
        known = column is not None and int(column) < len(names)
        where = f" in column {names[int(column)]!r}" if known else ""
        problem = f"text that is not UTF-8{where}; save the file as UTF-8"
    elif ": " in problem:  # "Expected 2 columns, got 3: <the row's text>"
        what, _, text = problem.partition(": ")
        problem = f"{what[0].lower()}{what[1:]} ({text[:80]!r})"
    return DataFileError(p, problem, row=int(row))


def _record_end(data: bytes) -> int:
    """The offset just past the first record (the header): its first newline outside quotes."""
    quoted = False
    for match in re.finditer(rb'["\n]', data):
        if match.group() == b'"':
            quoted = not quoted
        elif not quoted:
            return match.end()
    return len(data)


def _unclosed_quote(data: bytes) -> int | None:
    """The offset of a quote that opens a CSV field and is never closed, else None (a quote
    inside an unquoted field is text; ``""`` inside a quoted one is an escaped quote)."""
    pos = 0
    while (start := data.find(b'"', pos)) >= 0:
        if start and data[start - 1 : start] not in (b",", b"\n", b"\r"):
            pos = start + 1  # inside an unquoted field: text
            continue
        end = start + 1
        while True:
            end = data.find(b'"', end)
            if end < 0:
                return start
            if data[end + 1 : end + 2] != b'"':
                break
            end += 2
        pos = end + 1
    return None


def _decode(data: bytes, p: Path) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise DataFileError(
            p, "text that is not UTF-8; save the file as UTF-8", line=line
        ) from None


def _read_json(data: bytes, p: Path) -> list[dict[str, Any]]:
    """One JSON document (a list of records, a dict of columns, a record), else JSON lines."""
    text = _decode(data, p)
    if not text.strip():
        return []
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        if error.msg != "Extra data":  # the first value is broken: say where
            raise DataFileError(
                p, f"invalid JSON ({error.msg}, column {error.colno})", line=error.lineno
            ) from None
        return _read_json_lines(data, p)  # one value, then more: JSON lines
    return _records_from_json(document, p)


def _read_json_lines(data: bytes, p: Path) -> list[dict[str, Any]]:
    """One JSON object per line, through pyarrow; a file of valid lines that pyarrow refuses
    (a column holding numbers in some rows and text in others) is read line by line."""
    import pyarrow as pa
    import pyarrow.json as pj

    if not data.strip():
        return []
    options = pj.ReadOptions(use_threads=False, block_size=_block(data))
    try:
        return pj.read_json(pa.BufferReader(data), read_options=options).to_pylist()
    except (pa.ArrowInvalid, UnicodeDecodeError):
        return _json_lines_by_line(data, p)


def _json_lines_by_line(data: bytes, p: Path) -> list[dict[str, Any]]:
    """The records of a JSON lines file, or the first bad line as a :class:`DataFileError`."""
    rows = []
    for lineno, line in enumerate(_decode(data, p).split("\n"), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataFileError(
                p, f"invalid JSON ({error.msg}, column {error.colno})", line=lineno
            ) from None
        if not isinstance(value, dict):
            raise DataFileError(
                p, f"expected a JSON object (a record), got {type(value).__name__}", line=lineno
            )
        rows.append(value)
    return rows


def _records_from_json(data: Any, p: Path) -> list[dict[str, Any]]:
    if isinstance(data, list):
        for i, row in enumerate(data):
            if not isinstance(row, dict):
                raise DataFileError(
                    p, f"item {i} of the list is a {type(row).__name__}, not an object (a record)"
                )
        return data
    if isinstance(data, dict):
        if data and all(isinstance(v, list) for v in data.values()):  # dict of columns
            n = len(next(iter(data.values())))
            if any(len(v) != n for v in data.values()):
                raise DataFileError(p, "columns of different lengths")
            return [{k: v[i] for k, v in data.items()} for i in range(n)]
        return [data]
    raise DataFileError(p, f"expected JSON records (a list of objects), got {type(data).__name__}")


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
