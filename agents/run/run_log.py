"""The run folder: resolved config, per-iteration metrics (JSONL + CSV + TensorBoard, and
optionally wandb), samples, and events (resumes, changed settings).

``metrics.jsonl`` is the source of truth (one JSON object per iteration); ``metrics.csv``
is rewritten from it so that its columns are the union of every key seen. Appends
tolerate a torn last line (a run killed mid-write): it is dropped with a warning. Resuming
truncates the files to the checkpointed iteration by writing new files and renaming them
into place (a kill during that loses nothing), and TensorBoard is told to purge the steps
past the checkpoint, so a resumed run's files equal an uninterrupted run's.
"""

from __future__ import annotations

import csv
import json
import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any


class RunLog:
    """Writes one run's metrics and samples under ``output_dir``; ``purge_step``: the
    iteration a resumed run continues from (TensorBoard drops its steps from there on);
    ``sinks``: more places the same rows, samples and config go (each with ``config``,
    ``log``, ``log_samples``, ``close``: :class:`agents.run.wandb_log.WandbSink`)."""

    def __init__(
        self,
        output_dir: str | Path,
        tensorboard: bool = True,
        purge_step: int | None = None,
        sinks: Sequence[Any] = (),
    ) -> None:
        self.dir = Path(output_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.dir / "metrics.jsonl"
        self.samples_path = self.dir / "samples.jsonl"
        self.events_path = self.dir / "events.jsonl"
        self.rows: list[dict[str, Any]] = read_jsonl(self.metrics_path)
        self._tb = None
        self.sinks = list(sinks)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.dir / "tensorboard"), purge_step=purge_step)

    def write_config(self, config: dict[str, Any]) -> None:
        text = json.dumps(config, indent=2, sort_keys=True)
        _replace_text(self.dir / "config.json", text + "\n")
        for sink in self.sinks:
            sink.config(json.loads(text))  # as the file holds it

    def truncate(self, iterations_done: int) -> None:
        """Forget rows and samples of iterations >= ``iterations_done`` (resume)."""
        self.rows = [r for r in self.rows if r["iteration"] < iterations_done]
        _write_jsonl(self.metrics_path, self.rows)
        samples = [s for s in read_jsonl(self.samples_path) if s["iteration"] < iterations_done]
        _write_jsonl(self.samples_path, samples)
        self._write_csv()

    def log(self, iteration: int, metrics: dict[str, float]) -> None:
        row = {"iteration": iteration, **{k: _plain(v) for k, v in metrics.items()}}
        self.rows.append(row)
        _append(self.metrics_path, [row])
        self._write_csv()
        if self._tb is not None:
            for key, value in row.items():
                if key != "iteration" and isinstance(value, (int, float)) and math.isfinite(value):
                    self._tb.add_scalar(key, value, iteration)
            self._tb.flush()
        for sink in self.sinks:
            sink.log(iteration, row)

    def log_samples(self, iteration: int, samples: list[dict[str, Any]]) -> None:
        _append(self.samples_path, [{"iteration": iteration, **sample} for sample in samples])
        for sink in self.sinks:
            sink.log_samples(iteration, samples)

    def log_event(self, iteration: int, event: str, **details: Any) -> None:
        """Record an event of the run (``resume``, ``config_change``, ``stopped`` ...)."""
        _append(self.events_path, [{"iteration": iteration, "event": event, **details}])

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        for sink in self.sinks:
            sink.close()

    def _write_csv(self) -> None:
        columns: list[str] = []
        for row in self.rows:
            columns += [k for k in row if k not in columns]
        path = self.dir / "metrics.csv"
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(self.rows)
        os.replace(tmp, path)


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The rows of a JSONL file; a torn (unparseable) last line is dropped with a warning,
    a broken line elsewhere is an error naming the file and the line."""
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    rows = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            if n == len(lines):
                warnings.warn(
                    f"{path}: dropped its last line {n}, cut off mid-write ({err.msg})",
                    stacklevel=2,
                )
                continue
            raise ValueError(
                f"{path}, line {n}, is not valid JSON ({err.msg}); the run log is "
                "damaged: repair or remove that line"
            ) from err
    return rows


def _append(path: Path, rows: list[dict[str, Any]]) -> None:
    """Append rows, first ending a torn last line so the new rows stay parseable."""
    if not rows:
        return
    text = "".join(json.dumps(r) + "\n" for r in rows)
    if path.exists() and path.stat().st_size:
        with path.open("rb") as f:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                text = "\n" + text
    with path.open("a") as f:
        f.write(text)


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    _replace_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def _replace_text(path: Path, text: str) -> None:
    """Write ``text`` to a new file and rename it over ``path`` (never half-written)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
