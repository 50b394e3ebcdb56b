"""The A/B answer over records (bench/results/abcompare.py): literal results in, rows and lines out."""

from __future__ import annotations

import pytest

from bench.results.abcompare import compare_ab, differences, format_rows
from bench.results.compare import exit_code
from tests.results_factory import CPU, records, result

LABEL = "baseline (1 device)"


def _pairs(a_times, b_times, env_b=None, knobs_b=None, case="baseline", **config_b):
    a = [records(result(case, [t], env=CPU))[0] for t in a_times]
    b = [records(result(case, [t], env=env_b or CPU, knobs=knobs_b, **config_b))[0] for t in b_times]
    return list(zip(a, b))


def test_same_sides_are_unchanged_and_exit_0():
    rows = compare_ab({LABEL: _pairs([10.0, 10.4, 9.8, 10.1], [10.0, 10.4, 9.8, 10.1])})
    assert rows[0].verdict == "unchanged" and rows[0].ratio == 1.0 and rows[0].pairs == 4
    assert exit_code(rows) == 0


def test_a_slower_b_is_a_regression_and_exit_1():
    rows = compare_ab({LABEL: _pairs([10.0, 10.1, 9.9, 10.0], [13.0, 13.2, 12.8, 13.1])})
    assert rows[0].verdict == "regression" and rows[0].ratio == pytest.approx(1.3, abs=0.01)
    assert rows[0].interval[0] > 1.1 and exit_code(rows) == 1
    assert "regression" in format_rows(rows) and "1.30" in format_rows(rows)


def test_pairs_with_a_side_missing_or_invalid_are_left_out_with_the_reason():
    pairs = _pairs([10.0, 10.1, 9.9, 10.0], [10.0, 10.1, 9.9, 10.0])
    pairs[1] = (pairs[1][0], None)
    pairs[2] = (pairs[2][0], records(result("baseline", [5.0], env=CPU, knobs={"BENCH_TEST_STEP_SLEEP_S": 0.1}))[0])
    row = compare_ab({LABEL: pairs})[0]
    assert row.pairs == 2 and row.left_out == 2 and row.verdict == "inconclusive"  # 2 pairs: no test
    assert any("side B left no result" in n for n in row.notes) and any("test knob" in n for n in row.notes)


def test_no_valid_pair_is_invalid_and_exit_5():
    rows = compare_ab({LABEL: [(None, None)]})
    assert rows[0].verdict == "invalid" and exit_code(rows) == 5


def test_different_work_or_hardware_is_not_comparable_and_exit_6():
    work = compare_ab({LABEL: _pairs([10.0] * 3, [10.0] * 3, epochs=3)})[0]
    assert work.verdict == "not comparable" and work.differing_fields == ("epochs",)
    other = {**CPU, "cpu_model": "Intel Xeon"}
    hardware = compare_ab({LABEL: _pairs([10.0] * 3, [10.0] * 3, env_b=other)})
    assert hardware[0].verdict == "not comparable" and "CPU model" in hardware[0].notes[0]
    assert exit_code(hardware) == 6


def test_threads_given_differently_are_judged_and_named_in_what_changed():
    given = {"usable_cores": 2, "loader_workers": 0}
    a_env, b_env = {**CPU, "cores_given": {**given, "torch_threads": 2}}, {**CPU, "cores_given": {**given, "torch_threads": 1}}
    a = [records(result("baseline", [t], env=a_env))[0] for t in (10.0, 10.2, 9.9)]
    b = [records(result("baseline", [t], env=b_env))[0] for t in (10.0, 10.2, 9.9)]
    pairs = {LABEL: list(zip(a, b))}
    assert compare_ab(pairs)[0].verdict == "unchanged"
    assert "torch threads: 2 -> 1" in differences(pairs)


def test_differences_name_versions_and_test_knobs():
    pairs = {LABEL: _pairs([10.0] * 3, [13.0] * 3, env_b={**CPU, "torch": "2.15.0"},
                           knobs_b={"BENCH_TEST_STEP_SLEEP_S": 0.002})}
    lines = differences(pairs)
    assert "torch: 2.14.1+cu130 -> 2.15.0" in lines
    assert "test knobs: none -> BENCH_TEST_STEP_SLEEP_S=0.002" in lines


def test_differences_name_the_communication_variables_the_runs_recorded():
    # every run records its comm_env (empty when the user set none)
    a = [records({**(r := result("ddp", [t], env=CPU, devices=2)), "world": {**r["world"], "comm_env": {}}})[0]
         for t in (10.0, 10.1, 9.9)]
    b = [records({**(r := result("ddp", [t], env=CPU, devices=2)), "world": {**r["world"], "comm_env": {"NCCL_ALGO": "Ring"}}})[0]
         for t in (10.0, 10.1, 9.9)]
    assert "NCCL_ALGO: unset -> Ring" in differences({"ddp (2 devices)": list(zip(a, b))})


def test_holm_adjusts_over_the_cases_tested():
    two = {LABEL: _pairs([10.0, 10.1, 9.9], [10.5, 10.4, 10.6]),
           "ddp (2 devices)": _pairs([10.0, 10.1, 9.9], [10.0, 10.1, 9.9], case="ddp")}
    rows = compare_ab(two)
    alone = compare_ab({LABEL: two[LABEL]})[0]
    assert rows[0].p_value == pytest.approx(min(1.0, 2 * alone.p_value))
    assert any("Holm" in n for n in rows[0].notes)


def test_a_negative_tolerance_is_refused():
    with pytest.raises(ValueError, match="tolerance"):
        compare_ab({}, tolerance_pct=-1)
