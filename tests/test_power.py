"""Literal-number tests of bench.results.power and the time verdict of bench.results.stats.

Expected values come from printed t tables: t[0.95, 4] = 2.1318, t[0.80, 4] = 0.9410,
t[0.95, 6] = 1.9432, t[0.80, 6] = 0.9058, t[0.95, 8] = 1.8595, t[0.80, 8] = 0.8889.
"""

from __future__ import annotations

import math

import pytest

from bench.results.power import detectable_change, holm, pooled_sd_log, repeats_needed
from bench.results.stats import judge, ratio_bound, welch_log_p, welch_log_shift

E = math.exp


def test_pooled_sd_of_log_times():
    # log times -0.1, 0, 0.1 and 0.2, 0.3, 0.4: squares about the means 0.02 + 0.02 over 4 degrees of freedom
    assert pooled_sd_log([E(-0.1), 1.0, E(0.1)], [E(0.2), E(0.3), E(0.4)]) == pytest.approx(0.1)
    assert pooled_sd_log([1.0], [2.0]) is None


def test_detectable_change_from_counts_and_spread():
    # 5 a side, sd 0.05: (1.8595 + 0.8889) * 0.05 * sqrt(2/5) = 0.08691 -> exp - 1 = 9.08 %
    assert detectable_change(5, 5, 0.05, 0.05) == pytest.approx(0.0908, abs=2e-4)
    # 3 a side: (2.1318 + 0.9410) * 0.05 * sqrt(2/3) = 0.12545 -> 13.37 %
    assert detectable_change(3, 3, 0.05, 0.05) == pytest.approx(0.1337, abs=2e-4)
    assert detectable_change(3, 3, 0.0, 0.05) == 0.0
    # a stricter level (Holm over several rows) can only raise it
    assert detectable_change(5, 5, 0.05, 0.05 / 3) > detectable_change(5, 5, 0.05, 0.05)
    with pytest.raises(ValueError, match="3 in all"):
        detectable_change(1, 1, 0.05, 0.05)


def test_repeats_needed():
    # 4 a side: (1.9432 + 0.9058) * 0.05 * sqrt(1/2) = 0.10073 -> 10.6 % > 10 %; 5 a side: 9.08 %
    assert repeats_needed(0.05, 0.10, 0.05) == 5
    assert repeats_needed(0.0, 0.10, 0.05) == 2
    assert repeats_needed(0.05, 0.0, 0.05) is None


def test_holm_adjusted_p_values_in_given_order():
    # sorted 0.01, 0.03, 0.04 -> 3 * 0.01, max(0.03, 2 * 0.03), max(0.06, 1 * 0.04)
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert holm([]) == []


def test_welch_on_log_times_is_one_sided_in_the_direction_of_the_change():
    # log means differ by 0.1, each side's variance 0.01: t = 0.1 / sqrt(2 * 0.01 / 3) = 1.2247, 4 df
    slow, ref = [E(0.1), E(0.2), E(0.3)], [1.0, E(0.1), E(0.2)]
    assert welch_log_p(slow, ref) == pytest.approx(0.1439, abs=5e-4)
    assert welch_log_p(ref, slow) == pytest.approx(0.1439, abs=5e-4)  # "faster" tested the other way
    assert welch_log_p([2.0] * 3, [2.0] * 3) == 1.0 and welch_log_p([3.0] * 3, [2.0] * 3) == 0.0


def test_issue_example_slowdown_not_confirmed_is_inconclusive_with_repeats():
    # issue 27, item 2: +59 % but three noisy samples a side: never "slower" or "unchanged"
    v = judge([30.9, 55.0, 80.0], [46.6, 20.0, 30.0], 10.0)
    assert v.verdict == "inconclusive" and v.p_value > 0.05 and v.repeats_needed > 3
    assert "not confirmed" in v.notes[0] and f"{v.repeats_needed} repeats a side" in v.notes[0]


def test_low_power_within_tolerance_is_inconclusive_not_unchanged():
    # CV ~10 % with 3 a side: detectable ~27 % > 10 %, so a 2 % difference proves nothing
    v = judge([102.0, 92.0, 112.0], [100.0, 90.0, 110.0], 10.0)
    assert v.verdict == "inconclusive" and v.detectable_pct > 10.0
    assert "could not have detected a 10 % slowdown" in v.notes[0]


def test_tight_samples_give_a_verdict_with_its_detectable_change():
    v = judge([100.5, 99.5, 100.0], [100.0, 101.0, 99.0], 10.0)
    assert v.verdict == "unchanged" and 0.0 < v.detectable_pct < 10.0 and v.repeats_needed is None
    r = judge([130.0, 131.0, 129.0], [100.0, 101.0, 99.0], 10.0)
    assert r.verdict == "regression" and r.p_value < 0.001


def test_holm_adjusted_p_and_several_tests_change_the_verdict():
    now, ref = [112.0, 113.0, 111.0], [100.0, 103.0, 97.0]
    assert judge(now, ref, 10.0).verdict == "regression"
    assert judge(now, ref, 10.0, p_value=0.06, tests=3).verdict == "inconclusive"


# --- a significant slowdown beyond the tolerance with a detectable change above it (issue 27) -----
# log times -0.04, 0, 0.04 on each side: variance 0.0016, Welch se = sqrt(2 * 0.0016 / 3) = 0.03266 with
# 4 df; detectable change at 3 a side = (2.1318 + 0.9410) * 0.04 * sqrt(2/3) = 0.10036 -> 10.56 % > 10 %;
# the 95 % lower bound of a shift d is exp(d - 2.1318 * 0.03266) = exp(d - 0.06963).
REF = [100.0 * E(-0.04), 100.0, 100.0 * E(0.04)]


def test_welch_shift_and_its_confidence_bound():
    d, se, df = welch_log_shift([x * E(0.13) for x in REF], REF)
    assert (d, se, df) == pytest.approx((0.13, 0.03266, 4.0), abs=1e-5)
    assert ratio_bound(d, se, df, 0.05) == pytest.approx(E(0.13 - 0.06963), abs=1e-4)  # 1.0622
    assert ratio_bound(-d, se, df, 0.05) == pytest.approx(E(-0.13 + 0.06963), abs=1e-4)  # upper bound of a speed-up
    assert ratio_bound(0.1, 0.0, 4.0, 0.05) == pytest.approx(E(0.1))


def test_significant_slowdown_the_test_could_not_place_beyond_the_tolerance_is_inconclusive():
    # +13.9 %, p = 0.008, but detectable 10.6 % > 10 % and the lower bound +6.2 % is within the tolerance
    v = judge([x * E(0.13) for x in REF], REF, 10.0)
    assert v.verdict == "inconclusive" and v.p_value < 0.01 and v.detectable_pct == pytest.approx(10.56, abs=0.01)
    assert v.repeats_needed == 4  # 4 a side: (1.9432 + 0.9058) * 0.04 * sqrt(1/2) = 0.0806 -> 8.4 %
    assert ("significant slowdown of +13.9 %" in v.notes[0] and "could only detect 10.6%" in v.notes[0]
            and "(+6.2 %)" in v.notes[0] and "4 repeats a side" in v.notes[0])


def test_significant_slowdown_whose_lower_bound_exceeds_the_tolerance_stays_a_regression():
    # +24.6 %: lower bound exp(0.22 - 0.06963) = 1.1623, beyond 1.10 whatever the power
    v = judge([x * E(0.22) for x in REF], REF, 10.0)
    assert v.verdict == "regression" and v.detectable_pct > 10.0 and "(+16.2 %) is already beyond it" in v.notes[0]
    f = judge([x * E(-0.22) for x in REF], REF, 10.0)
    assert f.verdict == "faster" and "(-14.0 %)" in f.notes[0]  # upper bound exp(-0.22 + 0.06963) = 0.8604


def test_significant_slowdown_with_enough_power_is_a_regression_without_the_bound():
    # sd 0.03: detectable (2.1318 + 0.9410) * 0.03 * sqrt(2/3) = 0.0753 -> 7.8 % <= 10 %; lower bound of
    # +11.6 % is exp(0.11 - 2.1318 * 0.02449) = 1.0593, within the tolerance, yet the row is a regression
    ref = [100.0 * E(-0.03), 100.0, 100.0 * E(0.03)]
    v = judge([x * E(0.11) for x in ref], ref, 10.0)
    assert v.verdict == "regression" and v.detectable_pct == pytest.approx(7.82, abs=0.01) and v.notes == ()


def test_a_slowdowns_lower_bound_below_one_never_makes_it_a_regression():
    # From a new user's trial: +61.9 % with detectable change 57.5 % was called a regression because its
    # lower bound (-14.4 %... here -23.6 %) was "beyond the tolerance" on the speed-up side. Shift of log
    # times 0.48 with se 0.27 on 4 df, level 0.025: lower bound exp(0.48 - 2.7764 * 0.27) = exp(-0.2696) = 0.764.
    from bench.results.stats import apply_rule
    v = apply_rule(1.619, 0.01, 0.575, 20, 10.0, "20 repeats a side would detect 10 %", (0.48, 0.27, 4.0), 0.025)
    assert v.verdict == "inconclusive" and "(-23.6 %)" in v.notes[0], v
    assert ratio_bound(0.48, 0.27, 4.0, 0.025, slower=True) == pytest.approx(E(0.48 - 2.7764 * 0.27), abs=1e-4)
    # the same for a speed-up whose upper bound lies above 1
    v = apply_rule(1 / 1.619, 0.01, 0.575, 20, 10.0, "more", (-0.48, 0.27, 4.0), 0.025)
    assert v.verdict == "inconclusive", v
    # a slowdown whose lower bound is itself beyond the tolerance stays a regression
    v = apply_rule(1.619, 0.001, 0.575, 20, 10.0, "more", (0.48, 0.05, 4.0), 0.025)
    assert v.verdict == "regression", v
