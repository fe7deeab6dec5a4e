"""Score processing: running moments of the task scores and TRL's scaling / clipping."""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["RunningMoments", "per_trajectory", "process_scores"]


class RunningMoments:
    """Running mean / variance of all values seen (Chan et al.'s parallel formula, as TRL).

    ``var`` is the population variance, ``std`` the Bessel-corrected standard deviation.
    """

    def __init__(self) -> None:
        self.mean = 0.0
        self.std = 1.0
        self.var = 1.0
        self.count = 1e-24

    @torch.no_grad()
    def update(self, xs: torch.Tensor | np.ndarray | list[float]) -> tuple[float, float]:
        """Fold in a batch; returns the batch's ``(mean, unbiased std)``."""
        values = torch.as_tensor(xs).detach().to("cpu", torch.float64).flatten()
        n = values.numel()
        if n == 0:
            raise ValueError("RunningMoments.update: empty batch")
        var_t, mean_t = torch.var_mean(values, correction=0)
        xs_mean, xs_var = float(mean_t), float(var_t)
        delta = xs_mean - self.mean
        tot = self.count + n
        old_sum = self.var * self.count + delta**2 * self.count * n / tot
        self.mean += delta * n / tot
        self.var = (old_sum + xs_var * n) / tot
        self.std = math.sqrt(self.var * tot / (tot - 1)) if tot > 1 else 0.0
        self.count = tot
        return xs_mean, (math.sqrt(xs_var * n / (n - 1)) if n > 1 else 0.0)

    def state_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "std": self.std, "var": self.var, "count": self.count}

    def load_state_dict(self, state: dict[str, float]) -> None:
        for k in ("mean", "std", "var", "count"):
            setattr(self, k, float(state[k]))


def process_scores(
    scores: torch.Tensor | np.ndarray,
    moments: RunningMoments | None,
    use_score_scaling: bool = False,
    use_score_norm: bool = False,
    score_clip: float | None = None,
) -> torch.Tensor:
    """TRL's score processing: scale by the running std (and centre by the running mean
    with ``use_score_norm``), then clip to ``[-score_clip, score_clip]``.

    ``moments`` is updated with the raw scores when ``use_score_scaling``.
    """
    scores = torch.as_tensor(scores).float()
    if use_score_norm and not use_score_scaling:
        raise ValueError("use_score_norm requires use_score_scaling")
    if use_score_scaling:
        if moments is None:
            raise ValueError("use_score_scaling needs a RunningMoments")
        moments.update(scores)
        factor = moments.std + torch.finfo(scores.dtype).eps
        scores = (scores - moments.mean) / factor if use_score_norm else scores / factor
    if score_clip is not None:
        scores = scores.clamp(-score_clip, score_clip)
    return scores


def per_trajectory(
    values: np.ndarray | torch.Tensor, n: int, device: torch.device, what: str = "scores"
) -> torch.Tensor:
    """``values`` (numpy or torch, any shape of ``n`` numbers) as ``(n,)`` float32 on
    ``device``; refused unless they are ``n`` finite numbers (``what`` names them)."""
    v = torch.as_tensor(np.asarray(values) if not torch.is_tensor(values) else values)
    v = v.detach().to(device=device, dtype=torch.float32).reshape(-1)
    if v.numel() != n:
        raise ValueError(f"got {v.numel()} {what} for a batch of {n} trajectories")
    if not bool(torch.isfinite(v).all()):
        raise ValueError(f"{what} must be finite")
    return v
