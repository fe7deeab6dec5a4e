"""The training loop shared by CORY and the PPO baseline: iterate, evaluate, log,
checkpoint, plot, and resume from the last checkpoint.

A trainer is anything with ``models`` (names of the models it trains), ``step(iteration)
-> metrics``, ``evaluate() -> metrics``, ``samples`` (texts of the last step),
``state_dict()`` and ``load_state_dict(state)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from agents.run.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from agents.run.config import TrainConfig, to_dict
from agents.run.plots import plot_runs
from agents.run.run_log import RunLog

SKIPPED = "skipped_minibatches"
"""A learner stat (``<seat>/<learner>/skipped_minibatches``): mini-batches left out of an
update because their mean probability ratio exceeded the learner's ``ratio_threshold``."""


def checkpoint_path(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints" / "last.pt"


def fit(trainer, config: TrainConfig, stop_after: int | None = None) -> list[dict[str, Any]]:
    """Run ``config.iterations`` iterations of ``trainer`` (continuing a checkpoint with
    ``config.resume``); returns the metric rows. ``stop_after`` ends the loop early after
    that many iterations in total, as an interruption would (tests use it)."""
    out = Path(config.output_dir)
    ckpt = checkpoint_path(out)
    if not config.resume and (out / "metrics.jsonl").exists():
        raise FileExistsError(
            f"{out} already holds a run; pass --resume to continue it or choose another --output-dir"
        )
    log = RunLog(out)
    log.write_config(to_dict(config))
    start = 0
    if config.resume:
        state = load_checkpoint(ckpt)
        trainer.load_state_dict(state["trainer"])
        set_rng_state(state["global_rng"])
        start = state["iteration"]
    log.truncate(start)

    end = config.iterations if stop_after is None else min(stop_after, config.iterations)
    bar = tqdm(range(start, end), initial=start, total=config.iterations, disable=not config.progress,
               desc=type(trainer).__name__, unit="it")
    for it in bar:
        metrics: dict[str, float] = {}
        if config.eval_every and it % config.eval_every == 0:
            metrics.update(trainer.evaluate())
        metrics.update(trainer.step(it))
        log.log(it, metrics)
        skipped = {k: int(v) for k, v in metrics.items() if k.endswith("/" + SKIPPED) and v}
        if skipped:
            bar.write(f"iteration {it}: skipped mini-batches over the ratio threshold "
                      f"({', '.join(f'{k} {v}' for k, v in skipped.items())})")
        log.log_samples(it, trainer.samples[: config.num_samples])
        bar.set_postfix(reward=f"{metrics['charts/reward']:.3f}", kl=f"{metrics['charts/kl']:.3f}")
        if (it + 1) % config.checkpoint_every == 0 or it + 1 == end:
            save_checkpoint(ckpt, {"iteration": it + 1, "trainer": trainer.state_dict(),
                                   "global_rng": rng_state()})
    if end == config.iterations and config.eval_every:
        log.log(config.iterations, trainer.evaluate())
    plot_runs({"run": (log.rows, trainer.models)}, out / "plots")
    log.close()
    return log.rows
