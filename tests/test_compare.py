"""Unit tests of bench.results.compare: every verdict with literal numbers, speedups, same-system rules, exit codes."""

from __future__ import annotations

import pytest

from bench.core.exitcodes import ExitCode
from bench.results.baselines import load_baseline
from bench.results.compare import compare, exit_code, format_table, hardware_difference
from bench.results.recording import qualify
from bench.results.reading import read_records
from tests.results_factory import A100, CONFIG, CPU, H200, REFERENCE, baseline_of, records, result


def compare_runs(runs: list[dict], base: dict, **kw):
    return compare(records(*runs), base, **kw)


def one(comparisons, case):
    (match,) = [c for c in comparisons if c.case == case]
    return match


def reference() -> dict:
    return load_baseline("a100-2node")


# --- speedup and scaling efficiency of the reference numbers -------------------------------------

def test_reference_speedup_and_efficiency():
    comps = compare(read_records([REFERENCE]), reference())
    ddp, dp, base = one(comps, "ddp"), one(comps, "dp"), one(comps, "baseline")
    assert ddp.ref_speedup == pytest.approx(120 / 65) and round(ddp.ref_speedup, 2) == 1.85
    assert ddp.ref_efficiency == pytest.approx(120 / 65 / 4) and int(ddp.ref_efficiency * 100) == 46
    assert dp.ref_speedup == pytest.approx(120 / 141) and round(dp.ref_speedup, 2) == 0.85
    assert dp.ref_efficiency == pytest.approx(120 / 141 / 2)
    assert base.ref_speedup == 1.0 and base.ref_efficiency == 1.0
    table = format_table(comps)
    for text in ("1.85", "46.2%", "0.85", "42.6%"):
        assert text in table


def test_own_speedup_from_current_runs_on_same_hardware():
    runs = [result("baseline", [120.0]), result("ddp", [65.0], devices=2, nodes=2),
            result("dp", [141.0], devices=2)]
    comps = compare_runs(runs, baseline_of(*runs))
    assert one(comps, "ddp").speedup_own == pytest.approx(1.846, abs=1e-3)
    assert one(comps, "ddp").efficiency_own == pytest.approx(0.4615, abs=1e-4)
    assert one(comps, "dp").speedup_own == pytest.approx(0.851, abs=1e-3)
    assert [c.verdict for c in comps] == ["inconclusive"] * 3  # one run a side: no test, no verdict


# --- timing verdicts on the same hardware -------------------------------------------------------

def test_faster_significant():
    c = one(compare_runs([result("baseline", [80.0, 81.0, 79.0, 80.0])],
                    baseline_of(result("baseline", [100.0, 101.0, 99.0, 100.0]))), "baseline")
    assert c.verdict == "faster" and c.diff_pct == pytest.approx(-20.0) and c.p_value < 0.05
    assert c.basis == "time" and (c.n_now, c.n_baseline) == (4, 4)


def test_unchanged():
    c = one(compare_runs([result("baseline", [100.5, 99.5, 100.0])],
                    baseline_of(result("baseline", [100.0, 101.0, 99.0]))), "baseline")
    assert c.verdict == "unchanged" and c.diff_pct == pytest.approx(0.0)


def test_slower_within_tolerance_and_significant():
    c = one(compare_runs([result("baseline", [105.0, 105.2, 104.8, 105.1, 104.9])],
                    baseline_of(result("baseline", [100.0, 100.2, 99.8, 100.1, 99.9]))), "baseline")
    assert c.verdict == "slower" and c.diff_pct == pytest.approx(5.0) and c.p_value < 0.05


def test_small_slowdown_with_too_little_power_is_inconclusive():
    c = one(compare_runs([result("baseline", [103.0, 90.0, 115.0])],
                    baseline_of(result("baseline", [100.0, 88.0, 112.0]))), "baseline")
    assert c.verdict == "inconclusive" and c.p_value > 0.05 and c.detectable_pct > 10.0
    assert c.repeats_needed > 3 and any(f"{c.repeats_needed} repeats a side" in n for n in c.notes)


def test_regression_tight_samples_30_percent_slower():
    comps = compare_runs([result("baseline", [130.0, 131.0, 129.0])],
                    baseline_of(result("baseline", [100.0, 101.0, 99.0])))
    c = one(comps, "baseline")
    assert c.verdict == "regression" and c.diff_pct == pytest.approx(30.0) and c.p_value < 0.001
    assert exit_code(comps) == 1


def test_12_percent_slower_with_huge_variance_is_inconclusive_not_a_regression():
    comps = compare_runs([result("baseline", [112.0, 50.0, 180.0])],
                    baseline_of(result("baseline", [100.0, 60.0, 140.0])))
    c = one(comps, "baseline")
    assert c.diff_pct == pytest.approx(12.0) and c.p_value > 0.05
    assert c.verdict == "inconclusive" and exit_code(comps) == 0
    assert any("not confirmed" in n for n in c.notes)


def test_constant_samples_use_exact_difference():
    c = one(compare_runs([result("baseline", [130.0] * 3)], baseline_of(result("baseline", [100.0] * 3))),
            "baseline")
    assert c.verdict == "regression" and c.p_value == 0.0


def test_tolerance_parameter():
    now, base = [result("baseline", [112.0, 112.5, 111.5])], baseline_of(result("baseline", [100.0, 100.5, 99.5]))
    assert one(compare_runs(now, base, tolerance_pct=10.0), "baseline").verdict == "regression"
    assert one(compare_runs(now, base, tolerance_pct=15.0), "baseline").verdict == "slower"


@pytest.mark.parametrize("now, base", [([115.0], [100.0]), ([85.0], [100.0]), ([105.0], [100.0, 101.0]),
                                       ([100.0], [100.0]), ([116.7, 117.0], [100.0, 100.2, 99.8])])
def test_few_samples_are_never_judged(now, base):
    """Fewer than 3 samples on a side: no test, so no verdict (from a trial: one run against one was
    called a regression on unchanged code)."""
    c = one(compare_runs([result("baseline", now)], baseline_of(result("baseline", base))), "baseline")
    assert c.verdict == "inconclusive" and c.p_value is None
    assert any("fewer than 3 samples" in n and "ROUNDS=3" in n for n in c.notes)
    assert exit_code([c]) == 0


def test_current_samples_of_several_runs_are_pooled():
    runs = [result("baseline", [100.0, 101.0, 99.0]), result("baseline", [100.0, 100.5, 99.5])]
    c = one(compare_runs(runs, baseline_of(result("baseline", [100.0, 101.0, 99.0]))), "baseline")
    assert c.n_now == 6 and c.fit_s_now == 100.0


def test_not_comparable_names_fields_and_gives_no_timing_verdict():
    comps = compare_runs([result("baseline", [300.0, 301.0, 299.0], model="simple_cnn", epochs=2)],
                    baseline_of(result("baseline", [100.0, 101.0, 99.0])))
    c = one(comps, "baseline")
    assert c.verdict == "not comparable" and c.differing_fields == ("model", "epochs")
    assert c.basis is None and c.p_value is None and c.diff_pct is None
    assert exit_code(comps) == ExitCode.NOTHING_JUDGED == 6
    assert any("model, epochs differ" in n for n in c.notes)


def test_current_runs_that_did_different_work_are_not_comparable():
    runs = [result("baseline", [100.0]), result("baseline", [100.0], precision="bf16-mixed")]
    c = one(compare_runs(runs, baseline_of(result("baseline", [100.0]))), "baseline")
    assert c.verdict == "not comparable" and c.differing_fields == ("precision",)
    assert c.fit_s_now is None and c.diff_pct is None and c.n_now == 2  # no median over different work
    assert any("pass the files of one run folder" in n for n in c.notes)


@pytest.mark.parametrize("field, value", [("global_batch_size", 512), ("data_kind", "synthetic"),
                                          ("train_samples", 8000), ("preset", "cpu"),
                                          ("num_workers", 0), ("pin_memory", False),
                                          ("data_path", "device"), ("tf32", False), ("channels_last", True),
                                          ("cudnn_benchmark", True), ("sync_batchnorm", True)])
def test_each_work_field_makes_runs_not_comparable(field, value):
    c = one(compare_runs([result("baseline", [100.0], **{field: value})],
                    baseline_of(result("baseline", [100.0]))), "baseline")
    assert c.verdict == "not comparable" and c.differing_fields == (field,)


def test_results_from_before_the_data_path_field_did_uint8_work():
    old = {k: v for k, v in CONFIG.items() if k not in ("data_path", "channels_last", "tf32")}
    stored = baseline_of(result("baseline", [100.0], **old))
    stored["cases"]["baseline"]["config"] = {**old, "case": "baseline", "devices": 1, "num_nodes": 1}
    same = one(compare_runs([result("baseline", [100.0], data_path="uint8", tf32=True)], stored), "baseline")
    assert same.verdict == "inconclusive" and not same.differing_fields  # comparable (one run a side: no test)
    other = one(compare_runs([result("baseline", [100.0], data_path="device")], stored), "baseline")
    assert other.verdict == "not comparable" and other.differing_fields == ("data_path",)


# --- runs that are not figures, skipped, missing -------------------------------------------------

def test_missing_skipped_invalid_and_no_baseline():
    base = baseline_of(result("baseline", [100.0]), result("dp", [80.0], devices=2),
                       result("ddp", [40.0], devices=2, nodes=2))
    now = [result("dp", [0.0], status="skipped", reason="dp needs >= 2 GPUs, found 0", devices=2),
           result("ddp", [0.0], status="failed", reason="NCCL timeout", devices=2, nodes=2),
           result("extra", [10.0])]
    comps = compare_runs(now, base)
    assert [c.case for c in comps] == ["dp", "ddp", "extra", "baseline"]
    assert one(comps, "baseline").verdict == "missing" and one(comps, "baseline").fit_s_baseline == 100.0
    assert one(comps, "dp").verdict == "skipped" and "dp needs >= 2 GPUs, found 0" in one(comps, "dp").notes[0]
    assert one(comps, "ddp").verdict == "invalid" and "NCCL timeout" in one(comps, "ddp").notes[0]
    assert one(comps, "extra").verdict == "no baseline"
    assert exit_code(comps) == ExitCode.NO_VALID_RUN == 5


@pytest.mark.parametrize("bad, why", [
    (dict(sanity={"loss_finite": False, "accuracy_floor": 0.2, "accuracy_ok": False, "passed": False}),
     "sanity check failed"),
    (dict(profiled=True), "profiled"),
    (dict(knobs={"BENCH_TEST_STEP_SLEEP_S": 0.01}), "test knobs active"),
    (dict(status="interrupted", reason="SIGTERM"), "interrupted: SIGTERM"),
])
def test_a_case_with_only_invalid_runs_gets_its_own_verdict_and_exit_5(bad, why):
    base = baseline_of(result("baseline", [100.0, 101.0, 99.0]))
    comps = compare_runs([result("baseline", [100.0], **bad)], base)
    c = one(comps, "baseline")
    assert c.verdict == "invalid" and c.basis is None and c.n_now == 0 and c.n_invalid == 1
    assert any(why in n for n in c.notes)
    assert exit_code(comps) == 5


def test_invalid_runs_beside_valid_ones_are_left_out_and_named():
    base = baseline_of(result("baseline", [100.0, 101.0, 99.0]))
    diverged = result("baseline", [50.0], sanity={"loss_finite": False, "accuracy_floor": 0.0,
                                                  "accuracy_ok": True, "passed": False})
    comps = compare_runs([result("baseline", [100.0, 100.5, 99.5]), diverged], base)
    c = one(comps, "baseline")
    assert c.verdict == "unchanged" and c.n_now == 3 and c.n_invalid == 1 and c.fit_s_now == 100.0
    assert any("1 run(s) not a figure: sanity check failed" in n for n in c.notes)
    assert exit_code(comps) == 0


def test_regression_wins_over_invalid_in_the_exit_status():
    base = baseline_of(result("baseline", [100.0] * 3), result("ddp", [50.0] * 3, devices=2))
    comps = compare_runs([result("baseline", [130.0] * 3),
                          result("ddp", [50.0], status="failed", reason="x", devices=2)], base)
    assert [c.verdict for c in comps] == ["regression", "invalid"] and exit_code(comps) == 1


def test_two_world_sizes_are_two_rows_never_pooled():
    base = baseline_of(result("ddp", [50.0, 50.5, 49.5], devices=2))
    comps = compare_runs([result("ddp", [50.0, 50.2, 49.8], devices=2), result("ddp", [26.0, 26.1], devices=4)], base)
    assert [(c.label, c.verdict, c.n_now) for c in comps] == [
        ("ddp (2 devices)", "unchanged", 3), ("ddp (4 devices)", "not comparable", 2)]
    assert any("different scale" in n for n in comps[1].notes)


# --- same system = same hardware ----------------------------------------------------------------

def test_software_differences_still_get_verdicts():
    newer = {**H200, "torch": "2.15.0", "cuda_driver": "590.0", "lightning": "2.7.0", "nccl": "2.31"}
    base = baseline_of(result("baseline", [100.0, 101.0, 99.0]))
    c = one(compare_runs([result("baseline", [130.0, 131.0, 129.0], env=newer)], base), "baseline")
    assert c.verdict == "regression" and c.basis == "time"
    assert hardware_difference(newer, H200) is None


@pytest.mark.parametrize("env, words", [(A100, "GPU model"), ({**H200, "gpu_count": 8}, "GPUs per node"),
                                        ({**CPU, "cpu_count": 16}, "GPU model"),
                                        (None, "hardware is not recorded")])
def test_other_hardware_gets_no_verdict_and_exit_0(env, words):
    base = baseline_of(result("baseline", [100.0] * 3), result("ddp", [55.0] * 3, devices=4))
    now = [result("baseline", [200.0] * 3, env=env), result("ddp", [160.0] * 3, devices=4, env=env)]
    if env is None:
        for r in now:
            r["environment"] = None
    comps = compare_runs(now, base)
    ddp = one(comps, "ddp")
    assert ddp.verdict == "no verdict" and ddp.basis is None and ddp.fit_s_now == 160.0
    assert ddp.speedup_own == pytest.approx(1.25) and ddp.ref_speedup == pytest.approx(100 / 55)
    assert any(words in n and "information, not a verdict" in n for n in ddp.notes)
    assert exit_code(comps) == 0


def test_cpu_runs_differ_by_cpu_model_and_cores():
    assert hardware_difference(CPU, {**CPU, "cpu_count": 4}) == "different hardware (CPU cores 2 vs 4)"
    assert hardware_difference(CPU, {**CPU, "torch": "other"}) is None


def test_reference_file_gives_information_only_on_any_machine():
    """a100-2node: config and hardware unknown: times and ratios side by side, no verdict, exit 0."""
    for env in (H200, CPU, A100):
        now = [result("baseline", [40.0], env=env), result("ddp", [21.6], devices=2, nodes=2, env=env),
               result("dp", [60.0], devices=2, env=env)]
        comps = compare_runs(now, reference())
        assert [c.verdict for c in comps] == ["no verdict"] * 3 and exit_code(comps) == 0
        for c in comps:
            assert any("baseline's hardware is unknown" in n for n in c.notes)
            assert not any(v in " ".join(c.notes) for v in ("unchanged", "regression", "faster", "slower"))


def test_unknown_baseline_config_warns_but_still_judges_time():
    base = baseline_of(result("baseline", [100.0, 101.0, 99.0]))
    base["cases"]["baseline"]["config"] = None
    c = one(compare_runs([result("baseline", [130.0, 131.0, 129.0], epochs=99)], base), "baseline")
    assert c.verdict == "regression" and c.basis == "time"
    assert any("baseline config unknown" in n for n in c.notes)


def test_compare_rejects_bad_baseline_and_tolerance():
    with pytest.raises(ValueError, match="not a baseline file"):
        compare([], {"schema": "x"})
    with pytest.raises(ValueError, match="tolerance"):
        compare([], baseline_of(result("baseline", [1.0])), tolerance_pct=-1)


def test_no_row_verdict_contradicts_its_notes():
    """Rows without a time verdict never print a judged verdict, and judged rows never say 'no verdict'."""
    now = [result("baseline", [130.0] * 3), result("ddp", [20.0] * 3, devices=2, env=A100),
           result("dp", [1.0], status="failed", reason="boom", devices=2)]
    base = baseline_of(result("baseline", [100.0] * 3), result("ddp", [50.0] * 3, devices=2),
                       result("dp", [60.0] * 3, devices=2))
    for c in compare_runs(now, base):
        judged = c.verdict in ("faster", "unchanged", "slower", "regression")
        assert judged == (c.basis == "time")
        assert not judged or not any("not a verdict" in n or "no timing verdict" in n for n in c.notes)


# --- detectable change, Holm over rows, a comparison that judged nothing (issue 27) ---------------

def test_every_time_row_states_its_detectable_change():
    comps = compare_runs([result("baseline", [100.5, 99.5, 100.0])],
                         baseline_of(result("baseline", [100.0, 101.0, 99.0])))
    c = one(comps, "baseline")
    assert c.verdict == "unchanged" and 0.0 < c.detectable_pct < 10.0
    table = format_table(comps)
    assert "det %" in table and f"{c.detectable_pct:.1f}" in table and "drift:" in table


def test_several_rows_share_the_false_alarm_rate_by_holm():
    # each row alone: one-sided Welch p ~0.01-0.04; three rows together: Holm multiplies the smallest by 3
    base = baseline_of(result("baseline", [100.0, 104.0, 96.0]), result("dp", [100.0, 104.0, 96.0], devices=2),
                       result("ddp", [100.0, 104.0, 96.0], devices=2))
    now = [result("baseline", [113.0, 117.0, 109.0]), result("dp", [100.0, 101.0, 99.0], devices=2),
           result("ddp", [100.0, 101.0, 99.0], devices=2)]
    alone = one(compare_runs(now[:1], baseline_of(result("baseline", [100.0, 104.0, 96.0]))), "baseline")
    together = one(compare_runs(now, base), "baseline")
    assert alone.p_value < 0.05 and alone.verdict == "regression"
    assert together.p_value == pytest.approx(min(1.0, 3 * alone.p_value))
    assert any("Holm" in n for n in together.notes)
    assert together.detectable_pct > alone.detectable_pct  # taken at level 0.05 / 3


def test_a_comparison_that_judged_nothing_exits_6_and_prints_no_difference():
    """Issue 27 item 5: a baseline of another preset: every row not comparable, no diff %, not a pass."""
    base = baseline_of(result("baseline", [100.0, 101.0, 99.0], preset="cpu"),
                       result("ddp", [60.0, 61.0, 59.0], devices=2, preset="cpu"))
    now = [result("baseline", [20.0, 20.1, 19.9], preset="smoke"),
           result("ddp", [13.0, 13.1, 12.9], devices=2, preset="smoke")]
    comps = compare_runs(now, base)
    assert [c.verdict for c in comps] == ["not comparable"] * 2 and all(c.diff_pct is None for c in comps)
    assert exit_code(comps) == ExitCode.NOTHING_JUDGED
    table = format_table(comps)
    assert "-80.0" not in table and "-78.3" not in table  # the differences it could not judge
    missing_only = compare_runs([result("dp", [1.0], status="skipped", reason="no GPUs", devices=2)], base)
    assert exit_code(missing_only) == 6
    mixed = compare_runs(now[:1] + [result("ddp", [60.0, 61.0, 59.0], devices=2, preset="cpu")], base)
    assert exit_code(mixed) == 0  # one row judged: a verdict, not "nothing judged"


def test_compare_repeats_the_warnings_a_forced_baseline_record_kept():
    """Trial finding: a noisy baseline recorded with --force kept its warning, but compare did not show it."""
    base = baseline_of(result("baseline", [26.9, 15.9, 15.9]), result("ddp", [10.0, 10.1, 9.9], devices=2))
    (line,) = qualify(base, 10.0, force=True)
    rows = compare(records(result("baseline", [16.0, 16.1, 15.9]), result("ddp", [10.0, 10.1, 9.9], devices=2)), base)
    by_case = {r.case: r for r in rows}
    assert f"baseline warning (recorded with --force): {line}" in by_case["baseline"].notes
    assert not any("baseline warning" in n for n in by_case["ddp"].notes)
    assert "baseline warning (recorded with --force): case 'baseline': with 3 repeats" in format_table(rows)
    # also on a row with no time verdict: the case only in the baseline
    (missing,) = [r for r in compare(records(result("ddp", [10.0, 10.1, 9.9], devices=2)), base) if r.case == "baseline"]
    assert missing.verdict == "missing" and any(n.startswith("baseline warning") for n in missing.notes)
