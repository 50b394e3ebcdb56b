"""Unit tests of bench.compare: every verdict with literal numbers, speedups, input loading, the table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.baselines import load_baseline, record_baseline
from bench.compare import any_regression, compare, format_table, load_results

REPO = Path(__file__).resolve().parents[1]

CONFIG = {"preset": "full", "model": "resnet18", "data": "/data/cifar10", "data_kind": "official",
          "epochs": 20, "global_batch_size": 256, "train_samples": 0, "test_samples": 0,
          "precision": "32-true", "num_workers": 4, "pin_memory": True, "persistent_workers": True,
          "accelerator": "gpu", "data_path": "uint8", "tf32": True, "channels_last": False}
H200 = {"gpu_names": ["NVIDIA H200"] * 4, "gpu_count": 4, "cpu_model": "Xeon 8480", "cpu_count": 16}
A100 = {"gpu_names": ["NVIDIA A100-SXM4-40GB"] * 4, "gpu_count": 4, "cpu_model": "EPYC 7742", "cpu_count": 64}


def result(case: str, samples: list[float], status: str = "ok", devices: int = 1, nodes: int = 1,
           env: dict | None = None, reason: str | None = None, **config: object) -> dict:
    return {"schema": "cifar-bench/result", "schema_version": 1, "run_id": f"run-{case}",
            "case": case, "status": status, "reason": reason,
            "config": {**CONFIG, "case": case, "devices": devices, "num_nodes": nodes, **config},
            "metrics": {"fit_s": samples[0], "fit_s_samples": samples} if status == "ok" else None,
            "world": {"world_size": devices * nodes if case == "ddp" else 1, "num_nodes": nodes,
                      "devices_per_node": devices},
            "environment": env or H200, "ended_utc": "2025-01-01T00:00:00Z"}


def baseline_of(*runs: dict) -> dict:
    return record_baseline(list(runs), name="test", source="unit test")


def one(comparisons, case):
    (match,) = [c for c in comparisons if c.case == case]
    return match


def reference() -> dict:
    return load_baseline("a100-2node", REPO / "baselines")


# --- speedup and scaling efficiency of the reference numbers -------------------------------------

def test_reference_speedup_and_efficiency():
    comps = compare(load_results([REPO / "baselines" / "a100-2node.json"]), reference())
    ddp, dp, base = one(comps, "ddp"), one(comps, "dp"), one(comps, "baseline")
    assert ddp.ref_speedup == pytest.approx(120 / 65) and round(ddp.ref_speedup, 2) == 1.85
    assert ddp.ref_efficiency == pytest.approx(120 / 65 / 4) and int(ddp.ref_efficiency * 100) == 46
    assert dp.ref_speedup == pytest.approx(120 / 141) and round(dp.ref_speedup, 2) == 0.85
    # 0.851 / 2 = 0.4255: the brief's "42%" truncates; the table shows 42.6%
    assert dp.ref_efficiency == pytest.approx(120 / 141 / 2) and int(dp.ref_efficiency * 100) == 42
    assert base.ref_speedup == 1.0 and base.ref_efficiency == 1.0
    assert (ddp.devices_baseline, dp.devices_baseline) == (4, 2)
    table = format_table(comps)
    for text in ("1.85x", "46.2%", "0.85x", "42.6%"):
        assert text in table


def test_own_speedup_from_current_runs_on_same_hardware():
    runs = [result("baseline", [120.0]), result("ddp", [65.0], devices=2, nodes=2),
            result("dp", [141.0], devices=2)]
    comps = compare(runs, baseline_of(*runs))
    assert one(comps, "ddp").speedup_own == pytest.approx(1.846, abs=1e-3)
    assert one(comps, "ddp").efficiency_own == pytest.approx(0.4615, abs=1e-4)
    assert one(comps, "dp").speedup_own == pytest.approx(0.851, abs=1e-3)
    assert one(comps, "dp").efficiency_own == pytest.approx(0.4255, abs=1e-4)
    assert one(comps, "ddp").speedup_vs_ref_baseline == pytest.approx(120 / 65)
    assert [c.verdict for c in comps] == ["unchanged"] * 3


# --- timing verdicts on the same hardware -------------------------------------------------------

def test_faster_significant():
    c = one(compare([result("baseline", [80.0, 81.0, 79.0, 80.0])],
                    baseline_of(result("baseline", [100.0, 101.0, 99.0, 100.0]))), "baseline")
    assert c.verdict == "faster" and c.diff_pct == pytest.approx(-20.0) and c.p_value < 0.05
    assert c.basis == "time" and (c.n_now, c.n_baseline) == (4, 4)


def test_unchanged():
    c = one(compare([result("baseline", [100.5, 99.5, 100.0])],
                    baseline_of(result("baseline", [100.0, 101.0, 99.0]))), "baseline")
    assert c.verdict == "unchanged" and c.diff_pct == pytest.approx(0.0)


def test_slower_within_tolerance_and_significant():
    c = one(compare([result("baseline", [105.0, 105.2, 104.8, 105.1, 104.9])],
                    baseline_of(result("baseline", [100.0, 100.2, 99.8, 100.1, 99.9]))), "baseline")
    assert c.verdict == "slower" and c.diff_pct == pytest.approx(5.0) and c.p_value < 0.05


def test_small_insignificant_slowdown_is_unchanged():
    c = one(compare([result("baseline", [103.0, 90.0, 115.0])],
                    baseline_of(result("baseline", [100.0, 88.0, 112.0]))), "baseline")
    assert c.verdict == "unchanged" and c.p_value > 0.05


def test_regression_tight_samples_30_percent_slower():
    comps = compare([result("baseline", [130.0, 131.0, 129.0])],
                    baseline_of(result("baseline", [100.0, 101.0, 99.0])))
    c = one(comps, "baseline")
    assert c.verdict == "regression" and c.diff_pct == pytest.approx(30.0) and c.p_value < 0.001
    assert any_regression(comps)


def test_12_percent_slower_with_huge_variance_is_not_a_regression():
    comps = compare([result("baseline", [112.0, 50.0, 180.0])],
                    baseline_of(result("baseline", [100.0, 60.0, 140.0])))
    c = one(comps, "baseline")
    assert c.diff_pct == pytest.approx(12.0) and c.p_value > 0.05
    assert c.verdict == "slower" and not any_regression(comps)
    assert any("not significant" in n for n in c.notes)


def test_constant_samples_use_exact_difference():
    c = one(compare([result("baseline", [130.0] * 3)], baseline_of(result("baseline", [100.0] * 3))),
            "baseline")
    assert c.verdict == "regression" and c.p_value == 0.0


def test_tolerance_parameter():
    now, base = [result("baseline", [112.0, 112.5, 111.5])], baseline_of(result("baseline", [100.0, 100.5, 99.5]))
    assert one(compare(now, base, tolerance_pct=10.0), "baseline").verdict == "regression"
    assert one(compare(now, base, tolerance_pct=15.0), "baseline").verdict == "slower"


@pytest.mark.parametrize("now, base, verdict", [
    ([115.0], [100.0], "regression"),
    ([85.0], [100.0], "faster"),
    ([105.0], [100.0, 101.0], "slower"),
    ([100.0], [100.0], "unchanged"),
])
def test_few_samples_tolerance_alone_decides(now, base, verdict):
    c = one(compare([result("baseline", now)], baseline_of(result("baseline", base))), "baseline")
    assert c.verdict == verdict and c.p_value is None
    assert any("fewer than 3 samples" in n and "tolerance alone decides" in n for n in c.notes)


def test_current_samples_of_several_runs_are_pooled():
    runs = [result("baseline", [100.0, 101.0, 99.0]), result("baseline", [100.0, 100.5, 99.5])]
    c = one(compare(runs, baseline_of(result("baseline", [100.0, 101.0, 99.0]))), "baseline")
    assert c.n_now == 6 and c.fit_s_now == 100.0


# --- cases without a timing verdict -------------------------------------------------------------

def test_missing_skipped_failed_and_no_baseline():
    base = baseline_of(result("baseline", [100.0]), result("dp", [80.0], devices=2),
                       result("ddp", [40.0], devices=2, nodes=2))
    now = [result("dp", [0.0], status="skipped", reason="dp needs >= 2 GPUs, found 0"),
           result("ddp", [0.0], status="failed", reason="NCCL timeout"),
           result("extra", [10.0])]
    comps = compare(now, base)
    assert [c.case for c in comps] == ["baseline", "dp", "ddp", "extra"]
    assert one(comps, "baseline").verdict == "missing" and one(comps, "baseline").fit_s_baseline == 100.0
    assert one(comps, "dp").verdict == "skipped" and one(comps, "dp").fit_s_baseline == 80.0
    assert "dp needs >= 2 GPUs, found 0" in one(comps, "dp").notes[0]
    assert one(comps, "ddp").verdict == "failed" and "NCCL timeout" in one(comps, "ddp").notes[0]
    assert one(comps, "extra").verdict == "no baseline"
    assert not any_regression(comps)


def test_not_comparable_names_fields_and_gives_no_timing_verdict():
    comps = compare([result("baseline", [300.0, 301.0, 299.0], model="simple_cnn", epochs=2)],
                    baseline_of(result("baseline", [100.0, 101.0, 99.0])))
    c = one(comps, "baseline")
    assert c.verdict == "not comparable" and c.differing_fields == ("model", "epochs")
    assert c.basis is None and c.p_value is None and not any_regression(comps)
    assert any("model, epochs differ" in n for n in c.notes)


def test_current_runs_that_did_different_work_are_not_comparable():
    runs = [result("baseline", [100.0]), result("baseline", [100.0], precision="bf16-mixed")]
    c = one(compare(runs, baseline_of(result("baseline", [100.0]))), "baseline")
    assert c.verdict == "not comparable" and c.differing_fields == ("precision",)
    assert any("differ among themselves in precision" in n for n in c.notes)


@pytest.mark.parametrize("field, value", [("global_batch_size", 512), ("data_kind", "synthetic"),
                                          ("train_samples", 8000), ("preset", "cpu"),
                                          ("num_workers", 0), ("pin_memory", False),
                                          ("data_path", "device"), ("tf32", False), ("channels_last", True),
                                          ("cudnn_benchmark", True), ("sync_batchnorm", True)])
def test_each_work_field_makes_runs_not_comparable(field, value):
    c = one(compare([result("baseline", [100.0], **{field: value})],
                    baseline_of(result("baseline", [100.0]))), "baseline")
    assert c.verdict == "not comparable" and c.differing_fields == (field,)


def test_results_from_before_the_data_path_field_did_uint8_work():
    old = {k: v for k, v in CONFIG.items() if k not in ("data_path", "channels_last", "tf32")}
    stored = baseline_of(result("baseline", [100.0], **old))
    stored["cases"]["baseline"]["config"] = {**old, "case": "baseline", "devices": 1, "num_nodes": 1}
    same = one(compare([result("baseline", [100.0], data_path="uint8", tf32=True)], stored), "baseline")
    assert same.verdict == "unchanged"
    other = one(compare([result("baseline", [100.0], data_path="device")], stored), "baseline")
    assert other.verdict == "not comparable" and other.differing_fields == ("data_path",)


# --- hardware and unknown configs ---------------------------------------------------------------

def test_different_hardware_judges_on_ratios_only():
    base = baseline_of(result("baseline", [100.0], env=A100), result("ddp", [55.0], devices=4, env=A100))
    same_ratio = [result("baseline", [200.0]), result("ddp", [110.0], devices=4)]
    comps = compare(same_ratio, base)
    ddp = one(comps, "ddp")
    assert ddp.diff_pct == pytest.approx(100.0) and ddp.fit_s_now == 110.0  # absolute times still shown
    assert ddp.verdict == "unchanged" and ddp.basis == "ratio"
    assert any("different hardware" in n and "GPU models" in n for n in ddp.notes)
    assert one(comps, "baseline").verdict == "unchanged" and one(comps, "baseline").basis == "ratio"
    worse = compare([result("baseline", [200.0]), result("ddp", [160.0], devices=4)], base)
    assert one(worse, "ddp").verdict == "regression" and any_regression(worse)


def test_different_hardware_without_own_baseline_case_is_not_comparable():
    base = baseline_of(result("baseline", [100.0], env=A100), result("ddp", [55.0], devices=4, env=A100))
    c = one(compare([result("ddp", [55.0], devices=4)], base), "ddp")
    assert c.verdict == "not comparable" and c.differing_fields == ()
    assert any("no ratio available" in n for n in c.notes)


def test_reference_file_against_a_new_machine():
    """Reference has unknown config and hardware: warnings, ratios only, efficiency if devices differ."""
    now = [result("baseline", [40.0]), result("ddp", [21.6], devices=2, nodes=2),
           result("dp", [60.0], devices=2)]
    comps = compare(now, reference())
    ddp, dp = one(comps, "ddp"), one(comps, "dp")
    assert ddp.verdict == "unchanged" and ddp.speedup_own == pytest.approx(1.852, abs=1e-3)
    assert dp.verdict == "regression"  # speedup 0.67 against 0.85
    for c in comps:
        assert any("baseline config unknown" in n for n in c.notes)
        assert any("baseline hardware unknown" in n for n in c.notes)
    fewer = one(compare([result("baseline", [40.0]), result("ddp", [43.0], devices=2)], reference()), "ddp")
    assert fewer.verdict == "unchanged" and any("scaling efficiency" in n for n in fewer.notes)


def test_unknown_baseline_config_warns_but_still_judges_time():
    base = baseline_of(result("baseline", [100.0, 101.0, 99.0]))
    base["cases"]["baseline"]["config"] = None
    c = one(compare([result("baseline", [130.0, 131.0, 129.0], epochs=99)], base), "baseline")
    assert c.verdict == "regression" and c.basis == "time"
    assert any("baseline config unknown" in n for n in c.notes)


# --- input loading and errors -------------------------------------------------------------------

def test_load_per_run_pytest_benchmark_and_baseline_files(tmp_path):
    run = result("baseline", [100.0])
    (tmp_path / "run.json").write_text(json.dumps(run))
    bench = {"machine_info": {"node": "x"}, "skipped": [{"case": "dp", "reason": "needs 2 GPUs"}],
             "benchmarks": [{"name": "test_baseline", "stats": {"mean": 101.0},
                             "extra_info": {"result": run, "fit_s": 100.0}},
                            {"name": "test_ddp", "stats": {"mean": 51.0},
                             "extra_info": {"result": result("ddp", [50.0], devices=2)}}]}
    (tmp_path / "bench.json").write_text(json.dumps(bench))
    loaded = load_results([tmp_path / "run.json", tmp_path / "bench.json",
                           REPO / "baselines" / "a100-2node.json"])
    assert [(r["case"], r["status"]) for r in loaded] == [
        ("baseline", "ok"), ("baseline", "ok"), ("ddp", "ok"), ("dp", "skipped"),
        ("baseline", "ok"), ("dp", "ok"), ("ddp", "ok")]
    assert loaded[3]["reason"] == "needs 2 GPUs"
    comps = compare(loaded[1:4], reference())
    assert one(comps, "dp").verdict == "skipped" and one(comps, "ddp").speedup_own == 2.0


@pytest.mark.parametrize("content, message", [
    (None, "no such file"),
    ("{oops", "not valid JSON"),
    (json.dumps({"schema": "something/else"}), "unknown input"),
    (json.dumps([1, 2]), "unknown input"),
    (json.dumps({"schema": "cifar-bench/result", "schema_version": 2, "case": "dp", "status": "ok"}),
     "schema_version 2 is not supported"),
    (json.dumps({"benchmarks": [{"name": "test_x", "extra_info": {}}]}), "no extra_info.result"),
    (json.dumps({"schema": "cifar-bench/result", "schema_version": 1, "case": "dp", "status": "ok",
                 "metrics": {}}), "no metrics.fit_s"),
    (json.dumps({"schema": "cifar-bench/result", "schema_version": 1, "case": "dp", "status": "ok",
                 "metrics": {"fit_s_samples": [float("nan")]}}), "bad fit_s samples"),
])
def test_load_errors_say_what_to_do(tmp_path, content, message):
    path = tmp_path / "in.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ValueError, match=message):
        load_results([path])


def test_compare_rejects_bad_baseline_and_tolerance():
    with pytest.raises(ValueError, match="not a baseline"):
        compare([], {"schema": "x"})
    with pytest.raises(ValueError, match="tolerance_pct"):
        compare([], reference(), tolerance_pct=-1)


def test_format_table_rows_and_notes():
    comps = compare([result("baseline", [130.0, 131.0, 129.0])],
                    baseline_of(result("baseline", [100.0, 101.0, 99.0]), result("dp", [80.0], devices=2)))
    lines = format_table(comps).splitlines()
    assert lines[0].split()[:3] == ["case", "verdict", "fit_s"]
    assert lines[2].split()[:6] == ["baseline", "regression", "130.0", "100.0", "+30.0%", "3/3"]
    assert lines[3].split()[:4] == ["dp", "missing", "-", "80.0"]
    assert "notes:" in lines and any(line.strip().startswith("dp: case is in the baseline") for line in lines)
