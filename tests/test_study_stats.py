"""agents.run.study_stats against closed forms: Student's t for one and two degrees of
freedom, a binomial incomplete beta, a paired test by hand, reading a path and the
course of a reward."""

from __future__ import annotations

import math

import pytest

from agents.run.study_stats import (
    betainc,
    course,
    first_crossing,
    mean_ci,
    paired_test,
    t_critical,
    t_two_sided_p,
)


def test_incomplete_beta_equals_the_binomial_tail():
    # I_x(a, n - a + 1) = P(Binomial(n, x) >= a): n = 4, a = 2, x = 0.4
    tail = sum(math.comb(4, j) * 0.4**j * 0.6 ** (4 - j) for j in range(2, 5))
    assert betainc(2, 3, 0.4) == pytest.approx(tail, abs=1e-12)
    assert betainc(3, 2, 0.9) == pytest.approx(1 - betainc(2, 3, 0.1), abs=1e-12)
    assert betainc(0.5, 0.5, 0.5) == pytest.approx(0.5, abs=1e-12)
    with pytest.raises(ValueError, match="outside"):
        betainc(1, 1, 1.5)


@pytest.mark.parametrize("t", [0.3, 1.0, 2.5, 7.0, 40.0])
def test_t_tails_match_the_closed_forms(t):
    assert t_two_sided_p(t, 1) == pytest.approx(1 - 2 / math.pi * math.atan(t), abs=1e-10)
    assert t_two_sided_p(-t, 2) == pytest.approx(1 - t / math.sqrt(2 + t * t), abs=1e-10)


def test_t_quantiles_and_intervals():
    assert t_critical(1) == pytest.approx(math.tan(0.475 * math.pi), rel=1e-9)
    assert t_critical(2) == pytest.approx(math.sqrt(2 * 0.9025 / 0.0975), rel=1e-9)
    assert t_critical(30) == pytest.approx(2.0423, abs=1e-4)  # the printed tables' value
    m, ci = mean_ci([1.0, 2.0, 3.0, float("nan")])  # the NaN is a seed that never got there
    assert m == 2.0 and ci == pytest.approx(t_critical(2) * 1.0 / math.sqrt(3))
    assert math.isnan(mean_ci([1.0])[1]) and all(math.isnan(v) for v in mean_ci([]))


def test_paired_test_by_hand():
    out = paired_test([0.3, 0.3, 0.5], [0.175, 0.1333333333333, float("nan")])
    d = [0.125, 0.1666666666667]  # the third seed is unpaired (NaN) and left out
    sd = abs(d[0] - d[1]) / math.sqrt(2)
    assert out["seeds"] == 2 and out["diff"] == pytest.approx(sum(d) / 2)
    assert out["t"] == pytest.approx((sum(d) / 2) / (sd / math.sqrt(2)), rel=1e-6)  # 7.0
    assert out["p"] == pytest.approx(1 - 2 / math.pi * math.atan(out["t"]))
    same = paired_test([1.0, 2.0], [0.5, 1.5])  # every seed 0.5 ahead: t infinite, p 0
    assert same["t"] == math.inf and same["p"] == 0.0
    assert math.isnan(paired_test([1.0], [0.0])["p"])


def test_first_crossing_reads_the_path_in_order():
    xs, ys = [0.0, 2.0, 4.0, 3.0, 6.0], [0.0, 1.0, 2.0, 1.5, 3.0]
    assert first_crossing(xs, ys, 3.0) == pytest.approx(1.5)  # between (2, 1) and (4, 2)
    assert first_crossing(xs, ys, 5.0) == pytest.approx(2.5)  # after the dip: 1.5 + 2/3 * 1.5
    assert first_crossing(xs, ys, 0.0) == 0.0
    assert math.isnan(first_crossing(xs, ys, 6.5))


def test_course_peak_drop_and_late_slope_by_hand():
    # peak 0.5 at iteration 8; the second half (iterations >= 12): (16, 0.4), (24, 0.2)
    c = course([0, 8, 16, 24], [0.1, 0.5, 0.4, 0.2])
    assert c["peak"] == 0.5 and c["peak_iteration"] == 8.0
    assert c["drop"] == pytest.approx(0.3)
    assert c["late_slope"] == pytest.approx(10 * (0.2 - 0.4) / 8)  # -0.25 per 10 iterations
    # three late points: the least-squares slope of (8, 0.2), (12, 0.6), (16, 0.4) is 0.025
    rising = course([0, 8, 12, 16], [0.1, 0.2, 0.6, 0.4])
    assert rising["late_slope"] == pytest.approx(0.25) and rising["peak_iteration"] == 12.0
    last = course([0, 4], [0.1, 0.3])  # the peak is the last evaluation: no drop
    assert last["drop"] == 0.0 and math.isnan(last["late_slope"])  # one late point
    assert all(math.isnan(v) for v in course([], []).values())
