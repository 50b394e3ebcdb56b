"""table and report never pool runs of different systems (bench.results.system_groups).

Inputs: result files that differ from one another in exactly one hardware field at a time.
"""

from __future__ import annotations

import pytest

from bench.report.caserows import case_rows
from bench.results.reading import read_records
from bench.results.resultfile import format_table, summary_rows
from tests import results_factory as rf

# one hardware field changed at a time: (field, the other machine's value)
ONE_FIELD = [("cpu_model", "Intel Xeon 6338"), ("cpu_count", 1)]
GPU_FIELDS = [("gpu_names", ["NVIDIA A100-SXM4-40GB"] * 4), ("gpu_count", 2)]


def _files(tmp_path, env_a: dict, env_b: dict) -> list:
    a = [rf.result("baseline", [s], env=env_a) for s in (10.0, 10.2, 10.4)]
    b = [rf.result("baseline", [s], env=env_b) for s in (20.0, 20.2, 20.4)]
    return rf.write(tmp_path / "a", *a) + rf.write(tmp_path / "b", *b)


@pytest.mark.parametrize(("env", "field", "other"), [(rf.CPU, f, v) for f, v in ONE_FIELD] +
                         [(rf.H200, f, v) for f, v in GPU_FIELDS])
def test_table_gives_one_row_per_system_and_says_the_glob_mixed_machines(tmp_path, env, field, other):
    recs = read_records(_files(tmp_path, env, {**env, field: other}))
    rows = summary_rows(recs)
    assert [(r[0], r[2], r[3]) for r in rows] == [("baseline (1 device)", "3", "10.20"), ("baseline (1 device)", "3", "20.20")]
    assert all(r[7].startswith("[") for r in rows)  # each row names its system
    text = format_table(recs)
    assert "2 different systems" in text and "never pooled" in text


def test_one_system_stays_one_row_without_a_note(tmp_path):
    env_b = {**rf.CPU, "torch": "2.99.0"}  # software is not part of the system: one system, one row
    rows = summary_rows(read_records(_files(tmp_path, rf.CPU, env_b)))
    assert [(r[2], r[3], r[7]) for r in rows] == [("6", "15.20", "")]
    assert "different systems" not in format_table(read_records(_files(tmp_path, rf.CPU, env_b)))


@pytest.mark.parametrize(("field", "other"), ONE_FIELD)
def test_report_rows_and_speedups_are_per_system(tmp_path, field, other):
    env_b = {**rf.CPU, field: other}
    files = _files(tmp_path, rf.CPU, env_b)
    files += rf.write(tmp_path / "c", rf.result("ddp", [5.0], devices=2, env=rf.CPU, accelerator="cpu"),
                      rf.result("ddp", [5.0], devices=2, env=env_b, accelerator="cpu"))
    rows, _not_run, notes = case_rows(read_records(files))
    by_label = {r["configuration"]: r for r in rows}
    assert len(rows) == 4 and len(by_label) == 4  # baseline and ddp of each system, each labelled
    speedups = sorted(r["speedup"] for r in rows if r["case"] == "ddp")
    assert speedups == pytest.approx([10.2 / 5.0, 20.2 / 5.0])  # against its own system's baseline
    assert any("2 different systems" in n for n in notes)


def test_runs_given_fewer_cores_are_another_system_in_table_and_report(tmp_path):
    """The issue's case: runs made with 1 usable core (taskset -c 0) beside runs on 2, same machine."""
    given = {"affinity_cores": 2, "cgroup_quota_cores": None, "usable_cores": 2, "cores_per_rank": 2,
             "torch_threads": 2, "loader_workers": 1}
    env_a = {**rf.CPU, "cores_given": given}
    env_b = {**rf.CPU, "cores_given": {**given, "affinity_cores": 1, "usable_cores": 1, "torch_threads": 1,
                                       "loader_workers": 0}}
    recs = read_records(_files(tmp_path, env_a, env_b))
    assert [(r[2], r[3]) for r in summary_rows(recs)] == [("3", "10.20"), ("3", "20.20")]
    assert "2 different systems" in format_table(recs)
    rows, _not_run, _notes = case_rows(recs)
    assert len(rows) == 2


def test_one_machine_whose_cases_got_different_workers_is_one_system_with_its_speedup(tmp_path):
    """From a trial: the baseline case ran with 1 loader worker and 1 torch thread, each ddp rank with 0
    and 1, and the skipped dp case recorded no cores: one machine, one set of rows, ddp's speedup shown."""
    given = {"affinity_cores": 2, "cgroup_quota_cores": None, "usable_cores": 2, "cores_per_rank": 2,
             "torch_threads": 1, "loader_workers": 1}
    base_env = {**rf.CPU, "cores_given": given}
    ddp_env = {**rf.CPU, "cores_given": {**given, "cores_per_rank": 1, "loader_workers": 0}}
    skip_env = {**rf.CPU, "cores_given": dict.fromkeys(given)}
    files = rf.write(tmp_path, *[rf.result("baseline", [s], env=base_env) for s in (10.0, 10.2, 10.4)],
                     *[rf.result("ddp", [s], devices=2, env=ddp_env, accelerator="cpu") for s in (6.0, 6.1, 6.2)],
                     rf.result("dp", [], status="skipped", devices=2, env=skip_env, reason="needs 2 GPUs"))
    recs = read_records(files)
    assert "different systems" not in format_table(recs)
    rows, _not_run, notes = case_rows(recs)
    ddp = next(r for r in rows if r["case"] == "ddp")
    assert ddp["speedup"] == pytest.approx(10.2 / 6.1) and not any("different systems" in n for n in notes)
