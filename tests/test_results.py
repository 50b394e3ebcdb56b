"""Result records: assembly, atomic JSON, reading back, the printed table."""

from __future__ import annotations

import json
import math
import os

import pytest

from bench.results import resultfile


def _result(**metrics) -> dict:
    return resultfile.build_result(run_id="r1", case="ddp", status="ok", config={"epochs": 1}, started_utc="t0",
                                metrics=metrics, world={"world_size": 4})


def test_json_is_atomic_and_strict(tmp_path):
    path = resultfile.write_json_atomic(_result(fit_s=12.5, train_loss=math.nan), tmp_path / "a" / "r1.json")
    data = json.loads(path.read_text())
    assert data["metrics"] == {"fit_s": 12.5, "train_loss": None}  # NaN is not JSON: written as null
    assert [p.name for p in path.parent.iterdir()] == ["r1.json"]
    assert resultfile.load_result(path)["run_id"] == "r1"


def test_unknown_status_is_refused():
    with pytest.raises(ValueError, match="status"):
        resultfile.build_result(run_id="x", case="baseline", status="done", config={}, started_utc="t")


@pytest.mark.parametrize("content, message", [("{", "cannot read"), ('{"schema": "other"}', "not a cifar-bench"),
                                              ('{"schema": "cifar-bench/result", "schema_version": 9}', "schema_version 9")])
def test_bad_result_files_are_explained(tmp_path, content, message):
    path = tmp_path / "x.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        resultfile.load_result(path)


def test_table_shows_figures_cv_and_skip_reason():
    ok = _result(fit_s=10.0, fit_s_samples=[9.0, 10.0, 11.0], throughput_img_s=4000.0, test_accuracy=0.5,
                 accuracy_meaningful=True)
    ok["sanity"] = {"passed": True}
    skipped = resultfile.build_result(run_id="r2", case="dp", status="skipped", config={}, started_utc="t",
                                   reason="DataParallel needs 2 or more CUDA devices")
    table = resultfile.format_table([ok, skipped]).splitlines()
    assert table[0].split()[:5] == ["case", "status", "n", "fit_s", "[s]"]
    assert table[3].split() == ["ddp", "(4", "devices)", "ok", "3", "10.00", "10.0%", "(n=3)", "4000", "50.00%"]
    assert "skipped" in table[2] and "needs 2 or more CUDA devices" in table[2]  # order: baseline, dp, ddp


def test_new_run_id_neither_reads_nor_writes_the_environment(monkeypatch):
    monkeypatch.setenv("BENCH_RUN_ID", "inherited-id")
    monkeypatch.delenv("SLURM_STEP_ID", raising=False)
    first, second = resultfile.new_run_id("ddp"), resultfile.new_run_id("ddp")
    assert first.startswith("ddp-") and first != second  # fresh each call, random suffix
    assert os.environ["BENCH_RUN_ID"] == "inherited-id"  # nothing exported
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv("SLURM_STEP_ID", "3")
    assert resultfile.new_run_id("ddp") == "ddp-job42.3"  # the same in every task of the srun step


def test_an_exported_run_id_is_inherited(monkeypatch):
    # setenv first, so that teardown removes the exported id (a leaked id would name later runs
    # of this pytest process, e.g. the suite's skipped dp case)
    monkeypatch.setenv("BENCH_RUN_ID", "")
    assert resultfile.inherited_run_id() is None
    resultfile.export_run_id("ddp-20260101T000000Z-abcdef")
    assert resultfile.inherited_run_id() == "ddp-20260101T000000Z-abcdef"
    assert os.environ["BENCH_RUN_ID"] == "ddp-20260101T000000Z-abcdef"  # what a child process inherits


def test_table_marks_a_profiled_run():
    profiled = {**_result(fit_s=12.0), "profiled": True, "sanity": {"passed": True}}
    row = resultfile.format_table([profiled]).splitlines()[2]
    assert "r1: profiled: its times include the profiler's overhead" in row
    assert "12.00" not in row  # a time that is not a figure is not printed where figures go
    assert "profiled" not in resultfile.format_table([{**_result(fit_s=12.0), "sanity": {"passed": True}}])
