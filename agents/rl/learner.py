"""The ``Learner`` protocol — THE way to plug one's own algorithm into CORY — and a registry.

A learner owns everything an algorithm needs to update one agent (optimiser, KL
controller, statistics, RNG) except the weights, which are the agent's. The trainer
only ever calls the four members below, so any object with them can play a CORY role,
and role exchange (:mod:`agents.roles`) just swaps which learner is asked to update on
the pioneer's and the observer's trajectories.

Contract:

- ``samples_per_query``: responses the trainer samples per query. With ``k > 1`` the
  batch handed to ``update`` is grouped by query: rows ``i*k .. i*k + k-1`` share query
  ``i`` (what the group baselines of RLOO and GRPO need). PPO uses 1.
- ``agent``: the policy being trained (an :class:`agents.policy.LLMAgent` or anything
  with the same methods); the trainer samples from it.
- ``update(batch, scores) -> dict[str, float]``: one training step on a
  :class:`agents.rl.batch.TokenBatch` of ``N`` trajectories with their scalar scores ``(N,)``
  (numpy or torch; in CORY the collective reward). Returns flat, namespaced scalar stats
  (``"objective/kl"``, ``"ppo/loss/policy"``, ...) that the trainer logs as they are.
- ``state_dict()`` / ``load_state_dict(state)``: the learner's own state for checkpoints
  and resumption (not the weights; save ``agent.state_dict()`` for those).

Worked example — REINFORCE with a batch-mean baseline and no critic::

    import torch
    from agents.rl import Learner, make_learner, register_learner

    class Reinforce:
        samples_per_query = 1

        def __init__(self, agent, learning_rate=1e-5):
            self.agent = agent
            self.opt = torch.optim.Adam(agent.trainable_parameters(), lr=learning_rate)

        def update(self, batch, scores):
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

from .batch import TokenBatch

__all__ = [
    "Learner",
    "LearnerFactory",
    "available_learners",
    "learner_uses_values",
    "make_learner",
    "register_learner",
]


@runtime_checkable
class Learner(Protocol):
    """What the CORY trainer needs from a learning algorithm (see the module docstring)."""

    samples_per_query: int
    agent: Any

    def update(self, batch: TokenBatch, scores: np.ndarray | torch.Tensor) -> dict[str, float]:
        """Train on ``batch`` with per-trajectory ``scores`` ``(N,)``; return scalar stats."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """The learner's state (optimiser, controllers, statistics, RNG), not the weights."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        ...


LearnerFactory = Callable[..., Learner]
"""``factory(agent, **cfg) -> Learner``."""

_REGISTRY: dict[str, LearnerFactory] = {}


def register_learner(name: str, factory: LearnerFactory, *, overwrite: bool = False) -> None:
    """Make ``make_learner(name, agent, **cfg)`` call ``factory(agent, **cfg)``."""
    if not overwrite and name in _REGISTRY:
        raise ValueError(f"a learner named {name!r} is already registered (pass overwrite=True)")
    _REGISTRY[name] = factory


def available_learners() -> list[str]:
    """The registered learner names, sorted."""
    return sorted(_REGISTRY)


def make_learner(name: str, agent: Any, **cfg: Any) -> Learner:
    """Build the learner registered as ``name`` for ``agent``; ``cfg`` goes to its factory."""
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown learner {name!r}; registered: {available_learners()}") from None
    return factory(agent, **cfg)


def learner_uses_values(name: str) -> bool:
    """Whether the learner registered as ``name`` needs a value head: its class's
    ``uses_values`` (a ``Cls.build`` factory or the class itself); True when unknown."""
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown learner {name!r}; registered: {available_learners()}") from None
    owner = getattr(factory, "__self__", factory)
    return bool(getattr(owner, "uses_values", True))


# The learners that ship with the library; each builds from ``config=`` and LearnerConfig fields
# (and its own arguments, e.g. RLOO's ``k=``): see :meth:`agents.rl.base.LearnerBase.build`.
from .grpo import GRPOLearner  # noqa: E402
from .ppo import PPOLearner  # noqa: E402
from .rloo import RLOOLearner  # noqa: E402

register_learner("ppo", PPOLearner.build)
register_learner("rloo", RLOOLearner.build)
register_learner("grpo", GRPOLearner.build)
