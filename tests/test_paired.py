"""The paired A/B statistics (bench/results/paired.py): literal times in, figures and verdicts out."""

from __future__ import annotations

import math

import pytest

from bench.results.paired import detectable_paired, judge_pairs, log_ratios, paired_log_p, pairs_needed, ratio_interval
from bench.results.stats import judge


def test_log_ratios_and_their_errors():
    assert log_ratios([10.0, 20.0], [11.0, 20.0]) == pytest.approx([math.log(1.1), 0.0])
    with pytest.raises(ValueError, match="one time per side"):
        log_ratios([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="finite seconds > 0"):
        log_ratios([1.0, 0.0], [1.0, 1.0])


def test_detectable_change_of_pairs_is_the_paired_power_formula():
    # (t[0.95, 4] + t[0.80, 4]) * 0.05 / sqrt(5) = (2.1318 + 0.9410) * 0.02236 = 0.06871 -> exp - 1 = 7.11 %
    assert detectable_paired(5, 0.05, 0.05) == pytest.approx(0.07113, abs=1e-4)
    assert detectable_paired(5, 0.0, 0.05) == 0.0
    assert pairs_needed(0.05, 0.10, 0.05) == 4  # 3 pairs: 12.2 %, 4 pairs: 8.7 %
    with pytest.raises(ValueError, match=">= 2 pairs"):
        detectable_paired(1, 0.05, 0.05)


def test_interval_of_the_ratio_from_the_log_ratios():
    d = log_ratios([10.0] * 4, [11.0, 10.5, 11.5, 11.0])
    low, high = ratio_interval(d)
    assert (low, high) == (pytest.approx(1.0363, abs=1e-4), pytest.approx(1.1664, abs=1e-4))
    assert ratio_interval(d[:1]) is None
    assert paired_log_p(d) == pytest.approx(0.00727, abs=1e-4)
    assert paired_log_p([0.0, 0.0, 0.0]) == 1.0  # identical sides: no evidence of a change


def test_identical_sides_are_unchanged_never_a_regression():
    v = judge_pairs([10.0, 10.4, 9.8, 10.1], [10.0, 10.4, 9.8, 10.1], 10.0)
    assert (v.ratio, v.interval, v.pairs, v.verdict.verdict) == (1.0, (1.0, 1.0), 4, "unchanged")


def test_a_real_slowdown_is_a_regression_with_its_interval():
    v = judge_pairs([10.0, 10.1, 9.9, 10.0, 10.2], [13.0, 13.2, 12.8, 13.1, 13.0], 10.0)
    assert v.verdict.verdict == "regression" and v.verdict.p_value < 1e-5
    assert v.ratio == pytest.approx(1.30) and v.interval[0] > 1.1 and v.interval[1] < 1.35


def test_pairs_cancel_drift_that_unpaired_samples_cannot():
    # the machine's speed drifts 5x over the session; B is 1-3 % slower than A in every pair
    a, b = [10.0, 20.0, 30.0, 40.0, 50.0], [10.3, 20.2, 30.9, 40.4, 51.5]
    paired = judge_pairs(a, b, 10.0)
    assert paired.verdict.verdict == "slower" and paired.verdict.detectable_pct < 2.0
    assert judge(b, a, 10.0).verdict == "inconclusive"  # the unpaired rule sees only the drift's spread


def test_noisy_pairs_are_inconclusive_with_the_pairs_needed():
    v = judge_pairs([10.0, 11.0, 9.0, 12.0, 10.0], [12.0, 10.0, 10.0, 11.0, 9.5], 10.0)
    assert v.verdict.verdict == "inconclusive" and v.verdict.repeats_needed == 13
    assert "13 pairs would detect 10 %" in v.verdict.notes[0]


def test_fewer_than_three_pairs_give_no_verdict():
    v = judge_pairs([10.0, 10.0], [13.0, 13.0], 10.0)
    assert v.verdict.verdict == "inconclusive" and v.verdict.p_value is None and "fewer than 3 pairs" in v.verdict.notes[0]


def test_the_detectable_change_uses_holms_strictest_level_over_the_cases():
    a, b = [10.0, 10.1, 9.9, 10.0], [10.1, 10.3, 9.9, 10.2]
    assert judge_pairs(a, b, 10.0, tests=3).verdict.detectable_pct > judge_pairs(a, b, 10.0).verdict.detectable_pct
