"""The run plumbing: config and presets (:mod:`~agents.run.config`), building a run
(:mod:`~agents.run.setup`), rollouts through the env (:mod:`~agents.run.rollout`),
evaluation (:mod:`~agents.run.evaluate`), the trainer base (:mod:`~agents.run.trainer`),
the loop (:mod:`~agents.run.loop`), checkpoints, the run log, the metric names
(:mod:`~agents.run.metrics`) and plots."""
