"""The statistics of a study over seeds (``scripts/report.py``'s maths, numpy and the standard
library only): Student's t (its two-sided tail and 95% quantile, from the regularized
incomplete beta function), a mean with its 95% confidence interval, the paired t-test over
seeds, a value read off a run's evaluation path at a matched KL or reward, and the course
of a run's reward (its peak and what follows it).

A run's evaluation path is its sequence of evaluations ``(kl, reward)`` in iteration order.
The reward "at KL k" is read where the path first reaches KL ``k``, linearly interpolated
between the two evaluations around that crossing (NaN when the run never gets that far);
the KL "at reward r" the same way with the axes swapped. Reading the path, not the best
point a run ever had, keeps a late collapse (the reward falling while KL grows) visible.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = [
    "betainc",
    "course",
    "first_crossing",
    "mean_ci",
    "paired_test",
    "t_critical",
    "t_two_sided_p",
]


def _betacf(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300

    def step(num: float, c: float, d: float) -> tuple[float, float, float]:
        d = 1.0 + num * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + num / c
        c = c if abs(c) > tiny else tiny
        return c, d, c * d

    c, d, _ = step(-(a + b) * x / (a + 1.0), 1.0 / tiny, 1.0)  # c = 1, d = 1 / (1 - (a+b)x/(a+1))
    h = d
    for m in range(1, 500):
        c, d, f = step(m * (b - m) * x / ((a + 2 * m - 1.0) * (a + 2 * m)), c, d)
        h *= f
        c, d, f = step(-(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1.0)), c, d)
        h *= f
        if abs(f - 1.0) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function ``I_x(a, b)``, for ``a, b > 0``, ``0 <= x <= 1``."""
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"betainc: x = {x} is outside [0, 1]")
    if x in (0.0, 1.0):
        return x
    front = math.exp(
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_two_sided_p(t: float, dof: int) -> float:
    """``P(|T| >= |t|)`` for Student's t with ``dof`` degrees of freedom."""
    if dof < 1 or math.isnan(t):
        return math.nan
    if math.isinf(t):
        return 0.0
    return betainc(dof / 2.0, 0.5, dof / (dof + t * t))


def t_critical(dof: int, level: float = 0.95) -> float:
    """The two-sided ``level`` quantile of Student's t (12.706 for one degree of freedom,
    4.303 for two), found by bisection on :func:`t_two_sided_p`."""
    if dof < 1:
        return math.nan
    lo, hi = 0.0, 1e4
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if t_two_sided_p(mid, dof) > 1.0 - level else (lo, mid)
    return 0.5 * (lo + hi)


def mean_ci(values: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """``(mean, half-width of the 95% confidence interval)`` of the finite values (Student's
    t); NaN half-width for one value, NaN both for none."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return math.nan, math.nan
    if len(v) < 2:
        return float(v.mean()), math.nan
    return float(v.mean()), float(t_critical(len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))


def paired_test(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """The paired t-test of ``a - b`` over the pairs where both are finite (the same seed in
    both methods): ``seeds``, the mean difference, its 95% half-width, ``t`` and the
    two-sided ``p`` (NaN with fewer than two pairs; ``t`` infinite when every pair differs
    by the same amount)."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    d = d[np.isfinite(d)]
    mean, ci = mean_ci(d)
    out = {"seeds": len(d), "diff": mean, "ci95": ci, "t": math.nan, "p": math.nan}
    if len(d) >= 2:
        sd = float(d.std(ddof=1))
        t = mean / (sd / math.sqrt(len(d))) if sd > 0 else math.copysign(math.inf, mean or 1.0)
        if sd == 0 and mean == 0:
            t = 0.0
        out.update(t=float(t), p=t_two_sided_p(float(t), len(d) - 1))
    return out


def first_crossing(xs: Sequence[float], ys: Sequence[float], target: float) -> float:
    """``y`` where the path ``(xs[i], ys[i])`` (in order) first reaches ``x >= target``,
    linearly interpolated on the segment that crosses it; NaN if it never does."""
    for i, x in enumerate(xs):
        if x >= target:
            if i == 0 or x == xs[i - 1]:
                return float(ys[i])
            w = (target - xs[i - 1]) / (x - xs[i - 1])
            return float(ys[i - 1] + w * (ys[i] - ys[i - 1]))
    return math.nan


def course(iterations: Sequence[float], rewards: Sequence[float]) -> dict[str, float]:
    """The course of a run's evaluation reward (``rewards[i]`` at ``iterations[i]``, in order):
    ``peak`` (the highest), ``peak_iteration`` (its first iteration), ``drop`` (the peak minus
    the last evaluation's reward, 0 when the last is the peak) and ``late_slope`` (the
    least-squares slope of the reward over the evaluations of the run's second half, those at
    iterations ``>= last / 2``, per 10 iterations; NaN with fewer than two). The peak is the
    maximum of noisy evaluations, so ``drop`` is positive on average even for a run that
    never declines; the late slope has no such bias."""
    it = np.asarray(iterations, dtype=np.float64)
    r = np.asarray(rewards, dtype=np.float64)
    if len(r) == 0:
        return {k: math.nan for k in ("peak", "peak_iteration", "drop", "late_slope")}
    best = int(np.argmax(r))
    late = it >= it[-1] / 2
    slope = math.nan
    if late.sum() >= 2 and np.ptp(it[late]) > 0:
        slope = 10.0 * float(np.polyfit(it[late], r[late], 1)[0])
    return {
        "peak": float(r[best]),
        "peak_iteration": float(it[best]),
        "drop": float(r[best] - r[-1]),
        "late_slope": slope,
    }
