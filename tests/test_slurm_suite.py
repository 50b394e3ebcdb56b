"""`sbatch slurm/suite.sh` on the real local 2-node Slurm cluster (make cluster-up), on CPU.

The unmodified script is submitted with the smoke preset and the real CIFAR-10 images; only
options a user would pass on the command line differ (CPUs per task and time limit fit this
2-core machine, output and run folders go to a temporary directory).
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest

from bench.results.resultfile import load_result
from tests.test_cluster_smoke import _explain, cluster_up, slurm  # noqa: F401 (fixture)

pytestmark = pytest.mark.slurm
REPO = Path(__file__).resolve().parents[1]


def _env(tmp_path: Path, real_data: Path) -> dict:
    return {"BENCH_DATA": str(real_data), "BENCH_PRESET": "smoke", "BENCH_RUNS": str(tmp_path / "runs")}


def _sbatch(tmp_path: Path, real_data: Path, *options: str, wait: bool = True, timeout: float = 900):
    env = {**os.environ, **_env(tmp_path, real_data)}
    args = ["sbatch", "--parsable", f"--output={tmp_path}/slurm-%j.out", "--cpus-per-task=1", "--time=15",
            *options, *(["--wait"] if wait else []), str(REPO / "slurm" / "suite.sh")]
    import subprocess

    return subprocess.run([str(REPO / "slurm" / "cluster.sh"), "exec", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _result_files(run_dir: Path) -> list[Path]:
    """Per-run result JSON files (not pytest-benchmark's suite-*.json)."""
    return sorted(p for p in run_dir.glob("*.json") if not p.name.startswith("suite-"))


def _job_id(proc) -> str:
    return proc.stdout.strip().splitlines()[0].split(";")[0]


def _doc_submit_line() -> str:
    """The one way docs/slurm.md shows to submit to the local cluster (the line after its marker)."""
    lines = (REPO / "docs" / "slurm.md").read_text().splitlines()
    return lines[lines.index("# the local cluster (make cluster-up), from the repository root:") + 1].strip()


def test_suite_runs_all_cases_on_two_nodes_as_the_docs_submit_it(tmp_path, real_data):
    # docs/slurm.md's command, exactly as written, run from the repository root; only where its files go
    # (SBATCH_OUTPUT, BENCH_RUNS) and the rounds (BENCH_ROUNDS=2: interleaved) come from the environment
    line = _doc_submit_line()
    assert line.startswith("BENCH_DATA=../shared/data/cifar10-jpeg.tar.gz ") and " sbatch " in line, line
    env = {**os.environ, "BENCH_RUNS": str(tmp_path / "runs"), "SBATCH_OUTPUT": f"{tmp_path}/slurm-%j.out",
           "BENCH_ROUNDS": "2"}
    import subprocess

    if REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz" != real_data:
        pytest.skip("the docs' data path ../shared/data is not where the real data is")
    proc = subprocess.run(["bash", "-c", line], cwd=REPO, env=env, capture_output=True, text=True, timeout=1500)
    job = re.search(r"Submitted batch job (\d+)", proc.stdout).group(1)
    output = (tmp_path / f"slurm-{job}.out").read_text()
    assert proc.returncode == 0, _explain(proc) + output[-4000:]
    run_dir = tmp_path / "runs" / f"slurm-{job}"
    results = {(r["case"], int(r["run_id"].rsplit("-r", 1)[1]) + 1): r for r in map(load_result, _result_files(run_dir))}
    assert sorted(results) == [("baseline", 1), ("baseline", 2), ("ddp", 1), ("ddp", 2), ("dp", 1)], sorted(results)
    ddp = results["ddp", 1]
    assert results["baseline", 2]["status"] == "ok" and results["baseline", 1]["world"]["world_size"] == 1
    assert ddp["status"] == "ok" and ddp["world"]["world_size"] == 4 and results["ddp", 2]["status"] == "ok"
    assert sorted(set(ddp["world"]["hostnames"])) == ["node1", "node2"]  # reported by the ranks
    assert ddp["world"]["hostnames"].count("node1") == 2 and ddp["world"]["params_identical"]
    assert "SLURMEnvironment" in ddp["world"]["cluster_environment"]
    assert ddp["environment"]["slurm"]["SLURM_JOB_ID"] == job
    assert ddp["environment"]["code_path"] == str(REPO) and ddp["environment"]["git_commit_source"] == "git"
    assert f"code from the checkout {REPO}" in output
    assert sorted(ddp["world"]["nodes"]["per_node"]) == ["node1", "node2"]  # every node's GPU facts
    assert results["dp", 1]["status"] == "skipped" and "CUDA devices" in results["dp", 1]["reason"]
    # interleaved: round 1 of every case, then round 2 (dp, skipped on this hardware, is not run again)
    assert "order of the rounds (interleaved): baseline:1 dp:1 ddp:1 baseline:2 ddp:2" in output
    order = ["baseline", 1], ["dp", 1], ["ddp", 1], ["baseline", 2], ["ddp", 2]
    started = [results[tuple(o)]["started_utc"] for o in order]
    assert started == sorted(started), started
    assert (run_dir / "order.txt").read_text().split() == [f"{c}:{r}" for c, r in order]
    # the per-round pytest-benchmark files and the per-run files together: every round counted once
    from bench.results.reading import read_records

    records = read_records([str(p) for p in run_dir.glob("*.json")])
    assert sorted((r.case, r.status) for r in records) == sorted((c, results[c, r]["status"]) for c, r in order)
    # one pytest-benchmark file per step that timed something (a skipped step, dp here, times nothing)
    assert {p.name for p in run_dir.glob("suite-*.json")} - {"suite-dp-round1.json"} == {
        "suite-baseline-round1.json", "suite-ddp-round1.json", "suite-baseline-round2.json", "suite-ddp-round2.json"}
    # no baseline of this system named: no verdict, the shipped reference in one information line only
    assert "no verdict: name this system's own baseline with BENCH_BASELINE" in output
    assert len([line for line in output.splitlines() if "a100" in line]) == 1, output[-3000:]
    assert output.splitlines()[-1].startswith("suite.sh: exit 0"), output[-3000:]
    report = (run_dir / "report.md").read_text()
    assert re.search(r"\| Configuration +\| +Training Time \| +Speedup \|", report) and "a100" not in report
    assert (run_dir / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(run_dir.glob("*.tmp")) and not list(run_dir.glob(".*.tmp"))


def test_tasks_per_node_and_gpus_mismatch_is_refused_before_launch(tmp_path, real_data):
    proc = _sbatch(tmp_path, real_data, "--ntasks-per-node=1", timeout=120)
    job = _job_id(proc)
    output = (tmp_path / f"slurm-{job}.out").read_text()
    assert proc.returncode != 0
    assert "--ntasks-per-node=1 but --gres=gpu:2" in output and "--ntasks-per-node=2" in output
    assert not (tmp_path / "runs" / f"slurm-{job}").exists()  # nothing launched, nothing written
    assert "results in" not in output  # the script stopped at its checks, before any srun


@pytest.mark.parametrize("option, message", [("--gpus-per-task=1", "--gpus-per-task=1 shows each task only"),
                                             ("--gpu-bind=closest", "--gpu-bind=closest hides")])
def test_per_task_gpu_binding_is_refused_before_launch(tmp_path, real_data, option, message):
    proc = _sbatch(tmp_path, real_data, option, timeout=120)
    job = _job_id(proc)
    output = (tmp_path / f"slurm-{job}.out").read_text()
    assert proc.returncode != 0, _explain(proc) + output
    assert message in output and "docs/gpu-clusters.md" in output
    assert not (tmp_path / "runs" / f"slurm-{job}").exists()  # nothing launched, nothing written


def test_missing_data_stops_the_job_before_launch(tmp_path, real_data):
    proc = _sbatch(tmp_path, tmp_path / "no-such-data", timeout=120)
    output = (tmp_path / f"slurm-{_job_id(proc)}.out").read_text()
    assert proc.returncode != 0 and "no data at BENCH_DATA" in output and "cifar-bench data download" in output


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(1)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def test_time_limit_signal_keeps_finished_json_and_marks_the_interrupted_case(tmp_path, real_data):
    proc = _sbatch(tmp_path, real_data, wait=False, timeout=60)
    assert proc.returncode == 0, _explain(proc)
    job = _job_id(proc)
    run_dir = tmp_path / "runs" / f"slurm-{job}"
    first = _wait_for(lambda: sorted(run_dir.glob("baseline-*.json")), 600, "the baseline case's JSON")[0]
    sent = slurm("scancel", "--signal=USR1", "--batch", job, timeout=30)
    assert sent.returncode == 0, _explain(sent)
    _wait_for(lambda: slurm("squeue", "-h", "-j", job, timeout=30).stdout.strip() == "", 300, "the job to end")
    output = (tmp_path / f"slurm-{job}.out").read_text()
    assert "SIGUSR1" in output
    assert load_result(first)["status"] == "ok"  # the finished case is intact
    statuses = {r["case"]: r["status"] for r in map(load_result, _result_files(run_dir))}
    assert "interrupted" in statuses.values(), (statuses, output[-3000:])
    assert not list(run_dir.glob(".*.tmp"))  # no half-written file
    for path in run_dir.glob("*.json"):
        json.loads(path.read_text())  # every file left is complete JSON


def test_scancel_mid_suite_leaves_a_record_for_every_case_and_the_exit_line(tmp_path, real_data):
    # `scancel JOB`: SIGTERM to the batch script and every step at once, SIGKILL KillWait (5 s here) later
    from tests.test_faults import _assert_nothing_left

    proc = _sbatch(tmp_path, real_data, wait=False, timeout=60)
    assert proc.returncode == 0, _explain(proc)
    job = _job_id(proc)
    run_dir = tmp_path / "runs" / f"slurm-{job}"
    try:
        _wait_for(lambda: sorted(run_dir.glob("baseline-*.json")), 600, "the baseline case's JSON")
        _wait_for(lambda: (run_dir / "srun-dp.err").exists(), 120, "the dp step to start")  # (tee makes it)
        t0 = time.monotonic()
        sent = slurm("scancel", job, timeout=30)
        assert sent.returncode == 0, _explain(sent)
        _wait_for(lambda: slurm("squeue", "-h", "-j", job, timeout=30).stdout.strip() == "", 120, "the job to end")
        print(f"scancel to job end under suite.sh: {time.monotonic() - t0:.1f} s (KillWait 5 s)")
    finally:
        slurm("scancel", job, timeout=30)
    output = (tmp_path / f"slurm-{job}.out").read_text()
    statuses = {r["case"]: r["status"] for r in map(load_result, _result_files(run_dir))}
    assert statuses["baseline"] == "ok", (statuses, output[-3000:])
    # every case that did not finish has its record; dp may have been skipped (no GPU) before the signal
    assert statuses["ddp"] == "interrupted" and statuses["dp"] in ("interrupted", "skipped"), (statuses, output[-3000:])
    assert len(statuses) == len(_result_files(run_dir)) == 3  # one record a case, none twice
    assert "SIGTERM (scancel or time limit)" in output, output[-3000:]
    assert "suite.sh: exit 4" in output.splitlines()[-1] or "suite.sh: exit 4" in output, output[-3000:]
    assert "make it with: cifar-bench report" in output, output[-3000:]  # no time for the report: its command
    assert not list(run_dir.glob(".*.tmp"))
    _assert_nothing_left(run_dir)


def test_a_request_no_node_can_run_is_refused_at_submission_with_the_message_the_docs_quote(tmp_path):
    # the script's own default, 8 CPUs per task, on nodes with fewer: EnforcePartLimits=ALL refuses it
    doc = (REPO / "docs" / "slurm.md").read_text()
    quoted = doc.split("slurm/cluster.sh exec sbatch --test-only slurm/suite.sh\n", 1)[1].splitlines()[0].strip()
    checked = slurm("sbatch", "--test-only", "slurm/suite.sh", cwd=REPO, timeout=60)
    assert checked.returncode != 0 and quoted in checked.stdout + checked.stderr, (quoted, _explain(checked))
    submitted = slurm("sbatch", "--parsable", f"--output={tmp_path}/slurm-%j.out", "slurm/suite.sh", cwd=REPO, timeout=60)
    if submitted.returncode == 0:  # queued after all: never left pending
        slurm("scancel", submitted.stdout.strip().split(";")[0], timeout=30)
    assert submitted.returncode != 0 and quoted.split(": ", 1)[1] in submitted.stderr, _explain(submitted)
    assert f"Batch job submission failed: {quoted.split(': ', 1)[1]}" in doc
    fixed = slurm("sbatch", "--test-only", "--cpus-per-task=1", "slurm/suite.sh", cwd=REPO, timeout=60)
    assert fixed.returncode == 0 and "to start at" in fixed.stderr, _explain(fixed)  # the fix the docs give
