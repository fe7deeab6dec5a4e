"""The learners' configs derived from the run's config, field by field, by explicit tables.

Every :class:`agents.rl.config.LearnerConfig` and :class:`agents.rl.grpo.GRPOOptions` field
is either in a table (the run config's field it comes from) or in a list of fields
deliberately not set from the CLI, with the reason; a test holds the tables and the lists
to the learners' fields, so a field added to a learner is a decision, not a silent default.
"""

from __future__ import annotations

from agents.rl.config import LearnerConfig
from agents.rl.grpo import GRPOOptions
from agents.run.validate import RunConfig

__all__ = [
    "GRPO_FROM_RUN",
    "GRPO_NOT_FROM_RUN",
    "LEARNER_FROM_RUN",
    "LEARNER_NOT_FROM_RUN",
    "grpo_options",
    "learner_config",
]

LEARNER_FROM_RUN: dict[str, str] = {
    "learning_rate": "learning_rate",
    "mini_batch_size": "mini_batch_size",
    "ppo_epochs": "ppo_epochs",
    "gamma": "gamma",
    "lam": "lam",
    "cliprange": "cliprange",
    "cliprange_value": "cliprange_value",
    "vf_coef": "vf_coef",
    "init_kl_coef": "init_kl_coef",
    "adap_kl_ctrl": "adap_kl_ctrl",
    "target": "target",
    "horizon": "horizon",
    "kl_penalty": "kl_penalty",
    "use_score_scaling": "use_score_scaling",
    "use_score_norm": "use_score_norm",
    "score_clip": "score_clip",
    "whiten_rewards": "whiten_rewards",
    "max_grad_norm": "max_grad_norm",
    "target_kl": "target_kl",
    "ratio_threshold": "ratio_threshold",
    "gradient_accumulation_steps": "gradient_accumulation_steps",
    "max_tokens_per_microbatch": "max_tokens_per_microbatch",
    "seed": "seed",
}
"""``LearnerConfig`` field <- ``TrainConfig`` field. ``seed`` is the run's; each learner of a
run then gets its own offset of it (:func:`agents.run.setup.build_learner`)."""

LEARNER_NOT_FROM_RUN: dict[str, str] = {}
"""``LearnerConfig`` fields deliberately not set from the CLI, each with the reason (none:
every one is a flag)."""

GRPO_FROM_RUN: dict[str, str] = {
    "scale_rewards": "scale_rewards",
    "loss_aggregation": "loss_aggregation",
    "cliprange_high": "cliprange_high",
    "dual_clip": "dual_clip",
    "importance_sampling": "importance_sampling",
    "kl_beta": "kl_beta",
    "kl_estimator": "kl_estimator",
    "kl_in": "kl_in",
    "drop_uniform_groups": "drop_uniform_groups",
    "mask_truncated": "mask_truncated",
}
"""``GRPOOptions`` field <- ``TrainConfig`` field (the group size is the learner's own
argument, ``group_size``, not an option)."""

GRPO_NOT_FROM_RUN: dict[str, str] = {}
"""``GRPOOptions`` fields deliberately not set from the CLI, each with the reason (none)."""


def learner_config(config: RunConfig) -> LearnerConfig:
    """The hyper-parameters every learner of the run reads (:data:`LEARNER_FROM_RUN`)."""
    return LearnerConfig(
        **{field: getattr(config, source) for field, source in LEARNER_FROM_RUN.items()}
    )


def grpo_options(config: RunConfig) -> GRPOOptions:
    """The GRPO family's options of the run (:data:`GRPO_FROM_RUN`)."""
    return GRPOOptions(
        **{field: getattr(config, source) for field, source in GRPO_FROM_RUN.items()}
    )
