"""The RL side: tensors in, tensors out, no env and no I/O.

- :mod:`~agents.rl.batch` — ``TokenBatch``, the trajectories as the learners consume them;
- :mod:`~agents.rl.maths` — per-token maths (log-probs, entropy, masked statistics, KL
  estimators, per-token rewards, GAE, whitening);
- :mod:`~agents.rl.losses` — the clipped policy and value losses;
- :mod:`~agents.rl.kl_control` and :mod:`~agents.rl.scores` — the KL controllers and the
  score statistics;
- :mod:`~agents.rl.config` — ``LearnerConfig``;
- :mod:`~agents.rl.base` — the learner skeleton: the shared opening and ending of an update
  (:mod:`~agents.rl.passes`: the no-grad pass; :mod:`~agents.rl.stats`: the shared statistics)
  and its call into :mod:`~agents.rl.optimise`, the shared optimisation loop; the fused first
  forward (:mod:`~agents.rl.fused`) and the data-parallel / FSDP handling
  (:mod:`~agents.rl.parallel`) are parts of their own;
- :mod:`~agents.rl.ppo`, :mod:`~agents.rl.rloo`, :mod:`~agents.rl.grpo` — the learners,
  each only its advantages and its loss (:mod:`~agents.rl.grouped`: the group learners' shared
  part; :mod:`~agents.rl.group_maths`: the GRPO family's maths);
- :mod:`~agents.rl.learner` — the ``Learner`` protocol and the registry.
"""

from .base import LearnerBase
from .batch import TokenBatch
from .config import LearnerConfig
from .group_maths import (
    aggregate_loss,
    group_advantages,
    grpo_surrogate,
    kl_loss_term,
    uniform_groups,
)
from .grouped import GroupLearner
from .grpo import GRPOLearner, GRPOOptions
from .kl_control import AdaptiveKLController, FixedKLController, make_kl_controller
from .learner import (
    Learner,
    LearnerFactory,
    available_learners,
    learner_samples_per_query,
    learner_uses_values,
    make_learner,
    register_learner,
)
from .losses import policy_loss, value_loss
from .maths import (
    KL_ESTIMATORS,
    compute_gae,
    compute_rewards,
    entropy_from_logits,
    kl_penalty,
    last_token_index,
    logprobs_and_entropy,
    logprobs_from_logits,
    masked_mean,
    masked_var,
    masked_whiten,
    zero_pad,
)
from .optimise import optimise
from .passes import Rollout, rollout_pass
from .ppo import PPOLearner
from .rloo import RLOOLearner, check_group_size, rloo_advantages
from .scores import RunningMoments, process_scores

__all__ = [
    "KL_ESTIMATORS",
    "AdaptiveKLController",
    "FixedKLController",
    "GRPOLearner",
    "GRPOOptions",
    "GroupLearner",
    "Learner",
    "LearnerBase",
    "LearnerFactory",
    "LearnerConfig",
    "PPOLearner",
    "RLOOLearner",
    "Rollout",
    "RunningMoments",
    "TokenBatch",
    "aggregate_loss",
    "available_learners",
    "check_group_size",
    "compute_gae",
    "compute_rewards",
    "entropy_from_logits",
    "group_advantages",
    "grpo_surrogate",
    "kl_loss_term",
    "kl_penalty",
    "last_token_index",
    "learner_samples_per_query",
    "learner_uses_values",
    "logprobs_and_entropy",
    "logprobs_from_logits",
    "make_kl_controller",
    "make_learner",
    "masked_mean",
    "masked_var",
    "masked_whiten",
    "optimise",
    "policy_loss",
    "process_scores",
    "register_learner",
    "rloo_advantages",
    "rollout_pass",
    "uniform_groups",
    "value_loss",
    "zero_pad",
]
