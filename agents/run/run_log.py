"""The run folder: resolved config, per-iteration metrics (JSONL + CSV + TensorBoard), samples.

``metrics.jsonl`` is the source of truth (one JSON object per iteration); ``metrics.csv``
is rewritten from it so that its columns are the union of every key seen. Resuming
truncates both to the checkpointed iteration, so a resumed run's files equal an
uninterrupted run's.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any


class RunLog:
    """Writes one run's metrics and samples under ``output_dir``."""

    def __init__(self, output_dir: str | Path, tensorboard: bool = True) -> None:
        self.dir = Path(output_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.dir / "metrics.jsonl"
        self.samples_path = self.dir / "samples.jsonl"
        self.rows: list[dict[str, Any]] = _read_jsonl(self.metrics_path)
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.dir / "tensorboard"))

    def write_config(self, config: dict[str, Any]) -> None:
        (self.dir / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")

    def truncate(self, iterations_done: int) -> None:
        """Forget rows and samples of iterations >= ``iterations_done`` (resume)."""
        self.rows = [r for r in self.rows if r["iteration"] < iterations_done]
        _write_jsonl(self.metrics_path, self.rows)
        samples = [s for s in _read_jsonl(self.samples_path) if s["iteration"] < iterations_done]
        _write_jsonl(self.samples_path, samples)
        self._write_csv()

    def log(self, iteration: int, metrics: dict[str, float]) -> None:
        row = {"iteration": iteration, **{k: _plain(v) for k, v in metrics.items()}}
        self.rows.append(row)
        with self.metrics_path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        self._write_csv()
        if self._tb is not None:
            for key, value in row.items():
                if key != "iteration" and isinstance(value, (int, float)) and math.isfinite(value):
                    self._tb.add_scalar(key, value, iteration)
            self._tb.flush()

    def log_samples(self, iteration: int, samples: list[dict[str, Any]]) -> None:
        with self.samples_path.open("a") as f:
            for sample in samples:
                f.write(json.dumps({"iteration": iteration, **sample}) + "\n")

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()

    def _write_csv(self) -> None:
        columns: list[str] = []
        for row in self.rows:
            columns += [k for k in row if k not in columns]
        with (self.dir / "metrics.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(self.rows)


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
