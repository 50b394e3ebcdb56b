"""Literal-number tests of bench.results.drift (between-group drift) and of its use by judge, compare and
baseline record (issue 27: "drift between groups counted").

The groups are built from exact log times. Three baseline groups of 3 with log means 0, 0.1, 0.05 and
log offsets -0.02, 0, +0.02 inside each: N = 9, K = 3, grand mean 0.05;
SSW = 3 * 2 * 0.02^2 = 0.0024, MSW = 0.0024 / 6 = 0.0004; MSB = 3 * (0.05^2 + 0.05^2 + 0) / 2 = 0.0075;
n0 = (9 - 27/9) / 2 = 3; var_between = (0.0075 - 0.0004) / 3 = 0.0023667; coef = 27 / 81 = 1/3.
The current group: log 0.2 +- 0.02 (variance 0.0004, 3 repeats): d = 0.2 - 0.05 = 0.15;
se^2 = 0.0004 * (1/3 + 1/9) + 0.0023667 * (1 + 1/3) = 0.00017778 + 0.00315556 = 0.00333333, se = 0.057735;
df = 0.00333333^2 / (0.00017778^2 / 8 + 0.00315556^2 / 2) = 2.230.
Printed t table: t[0.95, 2] = 2.920, t[0.80, 2] = 1.061; t[0.95, 3] = 2.353, t[0.80, 3] = 0.978.
"""

from __future__ import annotations

import json
import math

import pytest

from bench.results.baselines import case_groups, record_baseline
from bench.results.compare import DRIFT_NOTE, compare, format_table
from bench.results.drift import describe, estimate, floor, noise_check_groups, shift
from bench.results.power import noise_check
from bench.results.recording import qualify
from bench.results.reading import read_records
from bench.results.stats import judge
from tests.results_factory import baseline_of, records, result, write

E = math.exp
OFFSETS = (-0.02, 0.0, 0.02)
GROUPS = [[100.0 * E(m + o) for o in OFFSETS] for m in (0.0, 0.1, 0.05)]
NOW = [100.0 * E(0.2 + o) for o in OFFSETS]
REF = [x for g in GROUPS for x in g]


def test_method_of_moments_estimate_from_groups():
    d = estimate(GROUPS)
    assert (d.groups, d.n, d.df_within) == (3, 9, 6)
    assert d.var_within == pytest.approx(0.0004) and d.var_between == pytest.approx(0.0071 / 3)
    assert d.coef == pytest.approx(1 / 3)
    # groups whose means agree better than their own spread allows: the estimate is 0, not negative
    assert estimate([[100.0, 110.0], [110.0, 100.0]]).var_between == 0.0
    assert estimate([REF]) is None and estimate([[100.0], [110.0]]) is None  # one group; no within df


def test_shift_counts_the_drift():
    d, se, df = shift(NOW, REF, estimate(GROUPS))
    assert (d, se, df) == pytest.approx((0.15, 0.057735, 2.230), abs=1e-3)
    # drift alone, infinitely many current repeats: sqrt(0.0031556) = 0.056174 at 2 df
    # -> exp((2.920 + 1.061) * 0.056174) - 1 = 25.06 %
    assert floor(estimate(GROUPS), 0.05) == pytest.approx(0.2506, abs=1e-3)


def test_a_verdict_with_drift_is_not_over_confident():
    # +16.2 %: the pooled samples alone call it a regression; counting the drift, p ~ 0.05 and the
    # detectable change at ~2.2 df lies between exp(3.331 * 0.057735) - 1 = 21.2 % and exp(3.981 * 0.057735) - 1 = 25.8 %
    assert judge(NOW, REF, 10.0).verdict == "regression"
    v = judge(NOW, REF, 10.0, drift=estimate(GROUPS))
    assert v.verdict == "inconclusive" and 21.2 < v.detectable_pct < 25.8 and v.repeats_needed is None
    assert "drift between groups alone makes the detectable change 25.1%" in v.notes[0]
    assert "more groups" in v.notes[0]
    # a slowdown far beyond the drift is still a regression: log shift 0.6 (+82 %)
    big = judge([x * E(0.4) for x in NOW], REF, 10.0, drift=estimate(GROUPS))
    assert big.verdict == "regression" and big.p_value < 0.01


def test_compare_states_the_drift_of_a_baseline_recorded_as_groups():
    base = baseline_of(result("baseline", REF))
    base["cases"]["baseline"]["sample_groups"] = ["runs/a"] * 3 + ["runs/b"] * 3 + ["runs/c"] * 3
    (row,) = compare(records(result("baseline", NOW)), base)
    assert row.verdict == "inconclusive" and row.drift_groups == 3
    assert describe(estimate(GROUPS)) in row.notes and "drift: estimated from 3 baseline groups" in describe(estimate(GROUPS))
    assert DRIFT_NOTE not in format_table([row])
    # the same file from before groups were kept (no sample_groups): one group, drift unknown, stated
    del base["cases"]["baseline"]["sample_groups"]
    (old,) = compare(records(result("baseline", NOW)), base)
    assert old.verdict == "regression" and old.drift_groups is None and DRIFT_NOTE in format_table([old])


def test_baseline_record_keeps_the_group_of_each_sample(tmp_path):
    paths = []
    for name, group in zip("abc", GROUPS):
        paths += write(tmp_path / f"run-{name}", *[result("baseline", [s]) for s in group])
    base, _ = record_baseline(read_records(paths), name="g", source="unit test")
    entry = base["cases"]["baseline"]
    assert entry["sample_groups"] == [str((tmp_path / f"run-{n}").resolve()) for n in "abc" for _ in range(3)]
    assert case_groups(entry) == GROUPS
    # re-recorded from the baseline file itself, the groups are kept
    path = tmp_path / "g.json"
    path.write_text(json.dumps(base))
    again, _ = record_baseline(read_records([path]), name="g2", source="unit test")
    assert case_groups(again["cases"]["baseline"]) == GROUPS
    assert case_groups({"fit_s_samples": REF}) == [REF]  # an older file: one group


def test_noise_qualification_counts_the_drift_of_a_baseline_recorded_as_groups():
    base = baseline_of(result("baseline", REF))
    base["cases"]["baseline"]["sample_groups"] = ["a"] * 3 + ["b"] * 3 + ["c"] * 3
    # pooled, the 9 samples (sd of log 4.7 %) would pass a 10 % tolerance; the drift makes a new group of 3
    # detect only ~21-26 % (the se and df of test_shift_counts_the_drift), and no repeats would do
    assert noise_check(REF, 10.0, 0.05)[0] < 10.0
    (line,) = qualify(base, 10.0, force=True)
    detectable = float(line.split("slowdowns of ")[1].split("%")[0])
    assert 21.2 < detectable < 25.8 and "9 repeats in 3 groups" in line
    assert "the drift between groups alone is too large" in line and base["cases"]["baseline"]["warnings"] == [line]
    with pytest.raises(ValueError, match="Nothing written"):
        qualify(base, 10.0, force=False)
    # groups that agree (same log means -0.02, 0, +0.02): var_between 0, a new group of 3 detects
    # exp((t[0.95, 8] + t[0.80, 8]) * 0.02 * sqrt(1/3 + 1/9)) - 1 = exp(2.7484 * 0.013333) - 1 = 3.7 %
    calm = baseline_of(result("baseline", GROUPS[0] * 3))
    calm["cases"]["baseline"]["sample_groups"] = ["a"] * 3 + ["b"] * 3 + ["c"] * 3
    assert noise_check_groups(case_groups(calm["cases"]["baseline"]), 10.0, 0.05)[0] == pytest.approx(3.73, abs=0.01)
    assert qualify(calm, 10.0, force=False) == []

