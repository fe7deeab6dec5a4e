"""``LearnerConfig``: the hyper-parameters every learner of :mod:`agents.rl` reads."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .maths import KL_ESTIMATORS

__all__ = ["LearnerConfig"]


@dataclass
class LearnerConfig:
    """Hyper-parameters every learner reads (PPO's own: ``gamma``, ``lam``, ``cliprange_value``,
    ``vf_coef``, ``whiten_rewards``); defaults: the paper's IMDB setting / TRL 0.7. An
    update's size is its batch's (``len(batch)``)."""

    learning_rate: float = 1.41e-5
    """Adam learning rate of the default optimiser."""
    mini_batch_size: int = 256
    """Trajectories per forward/backward pass (also the chunk size of the no-grad passes)."""
    ppo_epochs: int = 4
    """Passes over the batch per update."""
    gamma: float = 1.0
    """Discount factor over response tokens."""
    lam: float = 0.95
    """GAE lambda."""
    cliprange: float = 0.2
    """Policy ratio clip range."""
    cliprange_value: float = 0.2
    """Value prediction clip range (around the rollout values)."""
    vf_coef: float = 0.1
    """Weight of the value loss in ``loss = pg_loss + vf_coef * vf_loss``."""
    init_kl_coef: float = 0.2
    """Initial (or fixed) KL coefficient eta."""
    adap_kl_ctrl: bool = True
    """Use the adaptive KL controller (else a fixed coefficient)."""
    target: float = 6.0
    """Target sequence KL of the adaptive controller."""
    horizon: float = 10000.0
    """Horizon of the adaptive controller."""
    kl_penalty: str = "kl"
    """KL estimator of the reward penalty: ``kl``, ``abs``, ``mse`` or ``full``."""
    use_score_scaling: bool = False
    """Divide scores by their running standard deviation."""
    use_score_norm: bool = False
    """Also subtract the running mean (requires ``use_score_scaling``)."""
    score_clip: float | None = None
    """Clip processed scores to ``[-score_clip, score_clip]``."""
    whiten_rewards: bool = False
    """Whiten the token rewards (scale only) before GAE."""
    max_grad_norm: float | None = 1.0
    """Clip the gradient norm of the trainable parameters (None: no clipping)."""
    target_kl: float | None = None
    """Stop the remaining epochs once an epoch's mean approx KL exceeds ``1.5 * target_kl``."""
    ratio_threshold: float = 10.0
    """Skip (no backward) a mini-batch whose mean probability ratio exceeds this."""
    gradient_accumulation_steps: int = 1
    """Mini-batches accumulated per optimiser step."""
    max_tokens_per_microbatch: int | None = None
    """Cut each mini-batch into micro-batches of at most this many padded tokens (rows x
    their longest prompt + answer; a longer row goes alone), back-propagated one at a time
    and weighted by their rows: the same step as the whole mini-batch, less activation
    memory (None: the mini-batch in one piece)."""
    seed: int = 0
    """Seed of the learner's private generator for mini-batch shuffling."""

    def __post_init__(self) -> None:
        if self.kl_penalty not in KL_ESTIMATORS:
            raise ValueError(f"kl_penalty must be one of {KL_ESTIMATORS}, got {self.kl_penalty!r}")
        for name in ("mini_batch_size", "ppo_epochs", "gradient_accumulation_steps"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.use_score_norm and not self.use_score_scaling:
            raise ValueError("use_score_norm requires use_score_scaling")
        if self.max_tokens_per_microbatch is not None and int(self.max_tokens_per_microbatch) < 1:
            raise ValueError(
                f"max_tokens_per_microbatch must be >= 1 or None, got {self.max_tokens_per_microbatch}"
            )
        if self.target_kl is not None and self.target_kl <= 0:
            raise ValueError("target_kl must be positive or None")

    def within_budget(self, budget: int | None) -> LearnerConfig:
        """This config with its micro-batch token budget lowered to ``budget`` for one update
        (a smaller own budget, or ``budget`` None, is kept)."""
        own = self.max_tokens_per_microbatch
        if budget is None or (own is not None and own <= budget):
            return self
        return dataclasses.replace(self, max_tokens_per_microbatch=int(budget))
