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


def test_suite_runs_all_cases_on_two_nodes(tmp_path, real_data):
    proc = _sbatch(tmp_path, real_data)
    job = _job_id(proc)
    output = (tmp_path / f"slurm-{job}.out").read_text()
    assert proc.returncode == 0, _explain(proc) + output[-4000:]
    run_dir = tmp_path / "runs" / f"slurm-{job}"
    results = {r["case"]: r for r in map(load_result, _result_files(run_dir))}
    assert results["baseline"]["status"] == "ok" and results["baseline"]["world"]["world_size"] == 1
    ddp = results["ddp"]
    assert ddp["status"] == "ok" and ddp["world"]["world_size"] == 4
    assert sorted(set(ddp["world"]["hostnames"])) == ["node1", "node2"]  # reported by the ranks
    assert ddp["world"]["hostnames"].count("node1") == 2 and ddp["world"]["params_identical"]
    assert "SLURMEnvironment" in ddp["world"]["cluster_environment"]
    assert ddp["environment"]["slurm"]["SLURM_JOB_ID"] == job
    assert ddp["environment"]["code_path"] == str(REPO) and ddp["environment"]["git_commit_source"] == "git"
    assert f"code from the checkout {REPO}" in output
    assert sorted(ddp["world"]["nodes"]["per_node"]) == ["node1", "node2"]  # every node's GPU facts
    assert results["dp"]["status"] == "skipped" and "CUDA devices" in results["dp"]["reason"]
    assert "comparison with baseline 'a100-2node'" in output and "verdict" in output
    assert re.search(r"\| Configuration +\| +Training Time \| +Speedup \|", (run_dir / "report.md").read_text())
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
