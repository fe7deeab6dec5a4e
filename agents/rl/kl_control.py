"""KL coefficient controllers of the per-token penalty ``-kl_coef * KL_t``.

:class:`AdaptiveKLController` (Ziegler et al. 2019, as TRL 0.7) moves the coefficient
towards a target sequence KL; :class:`FixedKLController` keeps it constant. Both carry
their state in ``state_dict`` so role exchange and resume keep it.
"""

from __future__ import annotations

import numpy as np

__all__ = ["AdaptiveKLController", "FixedKLController", "make_kl_controller"]


class AdaptiveKLController:
    """Adaptive KL coefficient (Ziegler et al. 2019).

    ``update(current, n_steps)``: ``e = clip(current / target - 1, -0.2, 0.2)``,
    ``value *= 1 + e * n_steps / horizon`` (a non-finite ``current`` leaves it unchanged).
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: float) -> None:
        if target <= 0 or horizon <= 0:
            raise ValueError("target and horizon must be positive")
        self.value = float(init_kl_coef)
        self.target = float(target)
        self.horizon = float(horizon)

    def update(self, current_kl: float, n_steps: int) -> None:
        if not np.isfinite(current_kl):  # a diverged update says nothing about the KL
            return
        error = float(np.clip(float(current_kl) / self.target - 1.0, -0.2, 0.2))
        self.value *= 1.0 + error * n_steps / self.horizon

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])


class FixedKLController:
    """A constant KL coefficient; ``update`` does nothing."""

    def __init__(self, kl_coef: float) -> None:
        self.value = float(kl_coef)

    def update(self, current_kl: float, n_steps: int) -> None:
        pass

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])


def make_kl_controller(
    adaptive: bool, init_kl_coef: float, target: float, horizon: float
) -> AdaptiveKLController | FixedKLController:
    """The adaptive controller when ``adaptive``, else a fixed coefficient."""
    if adaptive:
        return AdaptiveKLController(init_kl_coef, target, horizon)
    return FixedKLController(init_kl_coef)
