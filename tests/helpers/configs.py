"""Run configs sized for the tiny model: seconds per run."""

from __future__ import annotations

from agents.run.config import TrainConfig


def small_config(tmp_path, **kw) -> TrainConfig:
    """A 3-iteration CORY/PPO config on ``sentiment`` with a 4-query batch, writing under
    ``tmp_path/run``; ``kw`` overrides any field."""
    base = dict(
        task="sentiment",
        iterations=3,
        batch_size=4,
        mini_batch_size=2,
        ppo_epochs=2,
        learning_rate=1e-2,
        max_new_tokens=5,
        min_new_tokens=3,
        swap_period=2,
        eval_every=2,
        eval_size=4,
        output_dir=str(tmp_path / "run"),
        progress=False,
        lora_r=4,
        lora_alpha=8,
    )
    base.update(kw)
    return TrainConfig(**base)
