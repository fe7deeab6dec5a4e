"""The ``Learner`` protocol — THE way to plug one's own algorithm into CORY — and a registry.

A learner owns everything an algorithm needs to update one agent (optimiser, KL
controller, statistics, RNG) except the weights, which are the agent's. The trainer
only ever uses the members below, so any object with them can play a CORY role,
and role exchange (:mod:`agents.roles`) just swaps which learner is asked to update on
the pioneer's and the observer's trajectories.

Contract:

- ``samples_per_query``: responses the trainer samples per query. With ``G > 1`` the
  batch handed to ``update`` is grouped by query: rows ``i*G .. i*G + G-1`` share query
  ``i`` (what the group baselines of RLOO and GRPO need). PPO uses 1.
- ``uses_values``: whether the learner needs the agent's value head (the run builds none
  for a learner that does not).
- ``agent``: the policy being trained (an :class:`agents.policy.LLMAgent` or anything
  with the same methods); the trainer samples from it.
- ``update(batch, scores, *, truncated=None) -> dict[str, float]``: one training step on a
  :class:`agents.rl.batch.TokenBatch` of ``N`` trajectories with their scalar scores ``(N,)``
  (numpy or torch; in CORY the collective reward) and the env's truncation flags ``(N,)``
  (the answers it cut at its token limit; a learner may ignore them). Returns flat,
  namespaced scalar stats (``"objective/kl"``, ``"ppo/loss/policy"``, ...) that the trainer
  logs as they are.
- ``state_dict()`` / ``load_state_dict(state)``: the learner's own state for checkpoints
  and resumption (not the weights; save ``agent.state_dict()`` for those).

The registry builds a learner by name: ``make_learner(name, agent, config=..., world=...,
**options)``; the world (:class:`agents.distributed.World`) is given at construction.
:func:`learner_uses_values` and :func:`learner_samples_per_query` answer from the
registered class before any learner is built.

Worked example — REINFORCE with a batch-mean baseline and no critic::

    import torch
    from agents.rl import Learner, make_learner, register_learner

    class Reinforce:
        samples_per_query, uses_values = 1, False

        def __init__(self, agent, learning_rate=1e-5):
            self.agent = agent
            self.opt = torch.optim.Adam(agent.trainable_parameters(), lr=learning_rate)

        def update(self, batch, scores, *, truncated=None, token_budget=None):
            scores = torch.as_tensor(scores, dtype=torch.float32, device=batch.device)
            adv = scores - scores.mean()
            logp = self.agent.forward(batch).logprobs            # (N, T), with grad
            seq_logp = (logp * batch.response_mask).sum(1)
            loss = -(adv * seq_logp).mean()
            self.opt.zero_grad(); loss.backward(); self.opt.step()
            return {"reinforce/loss": loss.item(), "env/reward_mean": scores.mean().item()}

        def state_dict(self):
            return {"optimizer": self.opt.state_dict()}

        def load_state_dict(self, state):
            self.opt.load_state_dict(state["optimizer"])

    register_learner("reinforce", Reinforce)
    learner = make_learner("reinforce", agent, learning_rate=1e-4)
    assert isinstance(learner, Learner)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from cory_env.registry import Registry

from .batch import TokenBatch

__all__ = [
    "Learner",
    "LearnerFactory",
    "available_learners",
    "learner_samples_per_query",
    "learner_uses_values",
    "make_learner",
    "register_learner",
]


@runtime_checkable
class Learner(Protocol):
    """What the CORY trainer needs from a learning algorithm (see the module docstring)."""

    agent: Any
    samples_per_query: int
    uses_values: bool

    def update(
        self,
        batch: TokenBatch,
        scores: np.ndarray | torch.Tensor,
        *,
        truncated: np.ndarray | None = None,
        token_budget: int | None = None,
    ) -> dict[str, float]:
        """Train on ``batch`` with per-trajectory ``scores`` ``(N,)``, the env's truncation
        flags ``(N,)`` where it gives them, and at most ``token_budget`` padded tokens per
        micro-batch where the trainer sets one (an observer within the pioneer's memory);
        return scalar stats."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """The learner's state (optimiser, controllers, statistics, RNG), not the weights."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        ...


LearnerFactory = Callable[..., Learner]
"""``factory(agent, **options) -> Learner``."""

_REGISTRY: Registry[LearnerFactory] = Registry("learner")


def register_learner(name: str, factory: LearnerFactory, *, replace: bool = False) -> None:
    """Make ``make_learner(name, agent, **options)`` call ``factory(agent, **options)``; a
    name already taken is refused unless ``replace``."""
    _REGISTRY.register(name, factory, replace=replace)


def available_learners() -> list[str]:
    """The registered learner names, sorted."""
    return _REGISTRY.names()


def make_learner(
    name: str, agent: Any, *, config: Any | None = None, world: Any | None = None, **options: Any
) -> Learner:
    """Build the learner registered as ``name`` for ``agent``: its factory gets ``config``
    (a :class:`agents.rl.config.LearnerConfig`) and ``world`` (the run's processes,
    :class:`agents.distributed.World`) where they are given, and ``options``."""
    given = {k: v for k, v in (("config", config), ("world", world)) if v is not None}
    return _REGISTRY.get(name)(agent, **given, **options)


def _owner(name: str) -> Any:
    """The class behind the factory registered as ``name`` (a ``Cls.build`` factory or the
    class itself; a plain function is its own owner)."""
    factory = _REGISTRY.get(name)
    return getattr(factory, "__self__", factory)


def learner_uses_values(name: str) -> bool:
    """Whether the learner registered as ``name`` needs a value head: its class's
    ``uses_values``; True when it does not say."""
    return bool(getattr(_owner(name), "uses_values", True))


def learner_samples_per_query(name: str, group_size: int) -> int:
    """How many answers per query the learner registered as ``name`` asks for in a run of
    ``group_size``: ``group_size`` when its class samples groups (``samples_groups``), else
    its class's ``samples_per_query`` where that is a number, else 1."""
    owner = _owner(name)
    if getattr(owner, "samples_groups", False):
        return int(group_size)
    fixed = getattr(owner, "samples_per_query", 1)
    return int(fixed) if isinstance(fixed, (int, np.integer)) and not isinstance(fixed, bool) else 1


# The learners that ship with the library; each builds from ``config=``, ``world=`` and
# LearnerConfig fields (and its own arguments, e.g. ``group_size=``): see
# :meth:`agents.rl.base.LearnerBase.build`.
from .grpo import GRPOLearner  # noqa: E402
from .ppo import PPOLearner  # noqa: E402
from .rloo import RLOOLearner  # noqa: E402

register_learner("ppo", PPOLearner.build)
register_learner("rloo", RLOOLearner.build)
register_learner("grpo", GRPOLearner.build)
