"""Weights & Biases as a second home for a run's log (``--log-with wandb``; the ``wandb``
extra): the same metric names at the same steps, the resolved config, and the logged samples
as a table, next to the run folder's own files (which stay the source of truth).

The default mode is wandb's ``offline`` one: it needs no account and no network and writes
the run under ``<run folder>/wandb/``, to upload later with ``wandb sync``. The run's wandb
id is kept in ``<run folder>/wandb_id`` so that ``--resume`` continues the same wandb run
(wandb does not rewind: steps a resumed run repeats after a crash are dropped by wandb,
while the run folder's files are truncated and rewritten). A sweep passes its folder's name
as the group.
"""

from __future__ import annotations

import math
import secrets
from pathlib import Path
from typing import Any, Literal

ID_FILE = "wandb_id"
SAMPLE_COLUMNS = ("iteration", "query", "pioneer", "observer", "score")


class WandbSink:
    """One wandb run mirroring a :class:`agents.run.run_log.RunLog`."""

    def __init__(
        self,
        run_dir: str | Path,
        project: str = "cory",
        group: str | None = None,
        mode: Literal["offline", "online", "disabled", "shared"] = "offline",
        name: str | None = None,
    ) -> None:
        try:
            import wandb
        except ModuleNotFoundError:
            raise ModuleNotFoundError(
                '--log-with wandb needs the wandb package: pip install -e ".[wandb]"'
            ) from None
        self._wandb = wandb
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        id_file = self.dir / ID_FILE
        run_id = id_file.read_text().strip() if id_file.exists() else secrets.token_hex(4)
        id_file.write_text(run_id + "\n")
        self.run = wandb.init(
            project=project,
            group=group,
            name=name or self.dir.name,
            id=run_id,
            resume="allow",
            mode=mode,
            dir=str(self.dir),
            settings=wandb.Settings(silent=True, console="off"),
        )
        self._samples: list[list[Any]] = []

    def config(self, config: dict[str, Any]) -> None:
        self.run.config.update(config, allow_val_change=True)

    def log(self, iteration: int, row: dict[str, Any]) -> None:
        """The row's finite numbers at step ``iteration`` (wandb drops a step it has passed)."""
        values = {
            k: v
            for k, v in row.items()
            if k != "iteration"
            and isinstance(v, (int, float))
            and not isinstance(v, bool)
            and math.isfinite(v)
        }
        if iteration >= self.run.step:
            self.run.log(values, step=iteration)

    def log_samples(self, iteration: int, samples: list[dict[str, Any]]) -> None:
        """Every sample so far as one table (wandb tables are immutable: re-logged whole)."""
        if not samples:
            return
        columns = [c for c in SAMPLE_COLUMNS if c == "iteration" or c in samples[0]]
        columns += [k for k in samples[0] if k not in columns]
        self._samples += [[iteration, *(s.get(c) for c in columns[1:])] for s in samples]
        if iteration >= self.run.step:
            self.run.log(
                {"samples": self._wandb.Table(columns=[*columns], data=self._samples)},
                step=iteration,
            )

    def close(self) -> None:
        """Finish the run, and have it on disk when this returns.

        ``run.finish()`` returns once wandb's service has the run's exit, but the service may
        still be writing the offline run's ``.wandb`` file (seen as a 7-byte file on a loaded
        machine); ``wandb.teardown()`` waits for the service to stop. It is skipped while
        another run of the process is still active, which teardown would finish too."""
        self.run.finish()
        if self._wandb.run is None:
            self._wandb.teardown()
