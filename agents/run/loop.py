"""The training loop shared by CORY and the PPO baseline: iterate, evaluate, log,
checkpoint, plot, and resume from the newest checkpoint.

A trainer is anything with ``models`` (names of the models it trains), ``step(iteration)
-> metrics``, ``evaluate() -> metrics``, ``samples`` (texts of the last step),
``state_dict()``, ``load_state_dict(state)`` and ``apply_settings(changes)``
(:class:`agents.run.trainer.Trainer` has them all).

What the loop guarantees: a folder holding a run is never overwritten (``--resume``
continues it; one that stopped before its first checkpoint starts over, saying so), nor
written by two processes at once (:mod:`agents.run.run_lock`); on resume the saved config is
the run's config and a damaged newest checkpoint is set aside for the newest intact one
(:mod:`agents.run.resume`); a learner that keeps skipping non-finite steps stops the run
with the likely cause; SIGINT / SIGTERM stop after the current iteration with a checkpoint.
An iteration whose update had non-finite steps writes no checkpoint (the weights its finite
steps produced are suspect). Each sitting (the first start and every resume) writes a
``sitting`` event to ``events.jsonl``: the machine kind (:mod:`agents.run.machine`), the
dtype and the number of processes, so a run's figures say where they were made.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from agents.distributed import SINGLE, World, gather
from agents.errors import DivergedError, Stopped
from agents.run.checkpoint import (
    checkpoint_dir,
    checkpoints,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from agents.run.config import TrainConfig, to_dict
from agents.run.machine import machine_kind
from agents.run.plots import plot_runs
from agents.run.resume import check_output
from agents.run.run_lock import release_run_folder
from agents.run.run_log import RunLog

SKIPPED = "skipped_minibatches"
"""A learner stat (``<seat>/<learner>/skipped_minibatches``): mini-batches left out of an
update because their mean probability ratio exceeded the learner's ``ratio_threshold``."""
NONFINITE, STEPS = "nonfinite_steps", "optimizer_steps"
"""Learner stats: optimiser steps skipped for a non-finite loss or gradient, steps taken."""
RUN_FILES = (
    "metrics.jsonl",
    "metrics.csv",
    "samples.jsonl",
    "events.jsonl",
    "config.json",
    "tensorboard",
    "plots",
    "models",
    "wandb",
    "wandb_id",
)


def fit(trainer, config: TrainConfig, stop_after: int | None = None) -> list[dict[str, Any]]:
    """Run ``config.iterations`` iterations of ``trainer`` (continuing its newest intact
    checkpoint with ``config.resume``); returns the metric rows. ``stop_after`` ends the loop
    early after that many iterations in total, as an interruption would (tests use it). The
    run folder's lock (taken when the folder is checked) is let go when it returns or raises."""
    try:
        return _fit(trainer, config, stop_after)
    finally:
        release_run_folder(config.output_dir)


def _fit(trainer, config: TrainConfig, stop_after: int | None) -> list[dict[str, Any]]:
    """:func:`fit`, holding the run folder."""
    out = Path(config.output_dir)
    w = getattr(trainer, "world", SINGLE)
    start, state, changes = _prepare(out, config, w)
    log = _open_log(out, config, w, start, resuming=state is not None)
    log.log_event(
        start, "sitting", machine=machine_kind(config.device), dtype=config.dtype, processes=w.size
    )
    if state is not None:
        trainer.load_state_dict(state["trainer"])
        set_rng_state(state["global_rng"])
        trainer.apply_settings(changes)
        log.log_event(start, "resume", changes={k: list(v) for k, v in changes.items()})
    # only now: a failed resume leaves the saved config
    log.write_config({**to_dict(config), "num_processes": w.size})
    log.truncate(start)

    end = config.iterations if stop_after is None else min(stop_after, config.iterations)
    bar = tqdm(
        range(start, end),
        initial=start,
        total=config.iterations,
        disable=not (config.progress and w.is_main),
        desc=type(trainer).__name__,
        unit="it",
    )
    streaks: dict[str, int] = {}
    with _stop_on_signals() as stop:
        for it in bar:
            metrics: dict[str, float] = {}
            if config.eval_every and it % config.eval_every == 0:
                metrics.update(trainer.evaluate())
            metrics.update(trainer.step(it))
            log.log(it, metrics)
            log.log_samples(it, trainer.samples[: config.num_samples])
            dirty = _report(bar, it, metrics, streaks, config, speak=w.is_main)
            stopping = _everyone(stop, w)
            bar.set_postfix(
                reward=f"{metrics['charts/reward']:.3f}", kl=f"{metrics['charts/kl']:.3f}"
            )
            if (it + 1) % config.checkpoint_every == 0 or it + 1 == end or stopping:
                _checkpoint(trainer, out, config, w, it, dirty, bar)
            if stopping:
                _stopped(log, out, it, dirty, stopping[0])
    if end == config.iterations and config.eval_every:
        log.log(config.iterations, trainer.evaluate())
    if w.is_main:
        plot_runs({"run": (log.rows, trainer.models)}, out / "plots")
    log.close()
    return log.rows


def _open_log(
    out: Path, config: TrainConfig, w: World, start: int, resuming: bool
) -> RunLog | MemoryLog:
    """The run's log: the run folder's files on the main process, memory on the others (a
    data-parallel run has one writer)."""
    if not w.is_main:
        return MemoryLog()
    return RunLog(
        out,
        tensorboard="tensorboard" in config.log_with,
        purge_step=start if resuming else None,
        sinks=_sinks(out, config),
    )


def _checkpoint(
    trainer, out: Path, config: TrainConfig, w: World, it: int, dirty: bool, bar
) -> None:
    """The checkpoint and the exported models after iteration ``it``; none after an update
    with non-finite steps (the weights its finite steps produced are suspect: the older
    checkpoint stays the newest)."""
    if dirty:
        bar.write(
            f"iteration {it}: no checkpoint written (its update had non-finite "
            "steps); the previous checkpoint stays the newest"
        )
        return
    state = {"trainer": trainer.state_dict(), "global_rng": rng_state()}
    if w.is_main or w.sharded_checkpoints:  # sharded: every process writes its shards
        save_checkpoint(checkpoint_dir(out), it + 1, state, keep=config.keep_checkpoints, world=w)
    _export(trainer, out)  # every process: sharded weights are gathered to the main one
    w.barrier()  # no process runs ahead of a checkpoint being written


def _stopped(log: RunLog | MemoryLog, out: Path, it: int, dirty: bool, signum: int) -> None:
    """End the run after iteration ``it`` on signal ``signum``: log it, say where to go on."""
    name = signal.Signals(signum).name
    log.log_event(it + 1, "stopped", signal=name)
    log.close()
    saved = "the newest clean checkpoint" if dirty else f"the checkpoint of {it + 1} iterations"
    raise Stopped(
        f"stopped by {name} after iteration {it}: {saved} is in "
        f"{checkpoint_dir(out)}; continue with --resume",
        signum=signum,
    )


def _export(trainer, out: Path) -> None:
    """The models in Hugging Face format under ``out/models/`` (with each checkpoint)."""
    if hasattr(trainer, "export_models"):
        trainer.export_models(out / "models")


def _prepare(
    out: Path, config: TrainConfig, w: World = SINGLE
) -> tuple[int, dict | None, dict[str, tuple]]:
    """``(start iteration, checkpoint state or None, settings changed on resume)``."""
    latest, changes = check_output(config, w)
    w.barrier()  # every process has seen the folder before the main one may clear it
    if latest is None:
        if w.is_main and any((out / name).exists() for name in RUN_FILES):
            tqdm.write(
                f"{out} holds no checkpoint (its run stopped before the first one): "
                "starting that run over"
            )
            for name in RUN_FILES:
                path = out / name
                shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        w.barrier()
        return 0, None, {}
    start, state = load_checkpoint(latest, w)
    return start, state, changes


def _everyone(stop: list[int], w: World) -> list[int]:
    """A stop asked of any process (a signal) is every process's: ``[the first signal any
    process got]``, or ``[]``; one process: ``stop`` itself."""
    if not w.parallel:
        return stop
    asked = gather(stop[0] if stop else 0, w)
    return [next((s for s in asked if s), 0)] if any(asked) else []


class MemoryLog:
    """The log of a process that does not write the run folder (data-parallel, rank > 0):
    the rows in memory, nothing on disk."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def log(self, iteration: int, metrics: dict[str, Any]) -> None:
        self.rows.append({"iteration": iteration, **metrics})

    def truncate(self, iterations_done: int) -> None:
        self.rows = [r for r in self.rows if r["iteration"] < iterations_done]

    def write_config(self, config: dict[str, Any]) -> None: ...
    def log_samples(self, iteration: int, samples: list[dict[str, Any]]) -> None: ...
    def log_event(self, iteration: int, event: str, **details: Any) -> None: ...
    def close(self) -> None: ...


def _sinks(out: Path, config: TrainConfig) -> list[Any]:
    """The log's extra destinations: a wandb run with ``--log-with wandb``."""
    if "wandb" not in config.log_with:
        return []
    from agents.run.wandb_log import WandbSink

    return [
        WandbSink(
            out, project=config.wandb_project, group=config.wandb_group, mode=config.wandb_mode
        )
    ]


def _report(
    bar,
    it: int,
    metrics: dict[str, float],
    streaks: dict[str, int],
    config: TrainConfig,
    speak: bool = True,
) -> bool:
    """One line per iteration for skipped or non-finite steps (``speak``: this process
    prints); stop a diverged learner. Returns whether any learner had a non-finite step
    this iteration."""
    skipped = {k: int(v) for k, v in metrics.items() if k.endswith("/" + SKIPPED) and v}
    if skipped and speak:
        bar.write(
            f"iteration {it}: skipped mini-batches over the ratio threshold "
            f"({', '.join(f'{k} {v}' for k, v in skipped.items())})"
        )
    bad = {k: int(v) for k, v in metrics.items() if k.endswith("/" + NONFINITE) and v}
    if bad and speak:
        bar.write(
            f"iteration {it}: skipped optimiser steps with a non-finite loss or gradient, "
            f"weights left as they were ({', '.join(f'{k} {v}' for k, v in bad.items())})"
        )
    for key, value in metrics.items():
        if not key.endswith("/" + NONFINITE):
            continue
        taken = metrics.get(key[: -len(NONFINITE)] + STEPS, 0)
        streaks[key] = int(value) if taken else streaks.get(key, 0) + int(value)
        if streaks[key] >= config.max_nonfinite_steps:
            kept = checkpoints(checkpoint_dir(config.output_dir))
            then = (
                f"the newest good checkpoint is {kept[-1]}: resume with --resume and a lower "
                "--learning-rate"
                if kept
                else "no checkpoint was written from a clean "
                "iteration, so the run starts over: run it again with a lower --learning-rate"
            )
            raise DivergedError(
                f"training diverged at iteration {it}: {streaks[key]} optimiser steps in a row "
                f"({key}) had a non-finite loss or gradient. The likely cause is a learning rate "
                f"too high for this model ({config.learning_rate:g}) or an overflow in "
                f"{config.dtype}. Nothing was checkpointed from the diverged iterations; {then}"
            )
    return bool(bad)


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[list[int]]:
    """SIGINT / SIGTERM ask the loop to stop after the current iteration (a second SIGINT
    interrupts at once); yields the list the signal number is put in."""
    stop: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum, frame):
        if stop and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.append(signum)
        tqdm.write(
            f"{signal.Signals(signum).name}: stopping after this iteration (with a checkpoint)"
        )

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, h in old.items():
            signal.signal(s, h)
