"""Faults under the real local Slurm cluster (make cluster-up): a batch script that forgets srun,
scancel of a running step, and one node's ranks killed under slurm/suite.sh. Each waits a bounded
time and checks the job's exit status, the result JSON and that no process of the run is left on
either node (the nodes are network namespaces of this machine: their processes are visible here).

Run (as root, cluster up): .venv/bin/python -m pytest -q -m slurm tests/test_faults_slurm.py
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from bench.results.resultfile import load_result
from tests.test_cluster_smoke import _explain, cluster_up, slurm  # noqa: F401 (fixture)
from tests.test_faults import _assert_nothing_left, _procs

pytestmark = pytest.mark.slurm
REPO = Path(__file__).resolve().parents[1]
PY = REPO / ".venv" / "bin" / "python"
SMALL = "--data synthetic --preset smoke --train-samples 640 --test-samples 200"


_JOBS: list[str] = []  # this module's jobs: cancelled after each test, so a failed test leaves none queued


@pytest.fixture(autouse=True)
def _cancel_own_jobs():
    yield
    while _JOBS:
        slurm("scancel", _JOBS.pop(), timeout=30)


def _sbatch(tmp_path: Path, script: str, *options: str, wait: bool, env: dict | None = None, timeout: float = 300):
    path = tmp_path / "job.sh"
    path.write_text("#!/bin/bash\nset -u\n" + script + "\n")
    args = ["sbatch", "--parsable", f"--output={tmp_path}/slurm-%j.out", "--time=10", "--cpus-per-task=1",
            f"--chdir={REPO}", *options, *(["--wait"] if wait else []), str(path)]
    return subprocess.run([str(REPO / "slurm" / "cluster.sh"), "exec", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


def _job_id(proc) -> str:
    job = proc.stdout.strip().splitlines()[0].split(";")[0]
    _JOBS.append(job)
    return job


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def _job_running(job: str) -> bool:
    return slurm("squeue", "-h", "-j", job, "-o", "%T", timeout=30).stdout.strip() == "RUNNING"


QUEUE_S = 900  # other jobs may hold the 2 nodes first (s)


def _job_gone(job: str) -> bool:
    return slurm("squeue", "-h", "-j", job, timeout=30).stdout.strip() == ""


def test_sbatch_script_that_forgets_srun_is_refused_at_once(tmp_path):
    out = tmp_path / "out"
    proc = _sbatch(tmp_path, f"PYTHONPATH={REPO} {PY} -m bench run --case ddp --devices 2 {SMALL} --out {out}",
                   "-N1", "--ntasks-per-node=2", wait=True, timeout=QUEUE_S + 120)
    output = (tmp_path / f"slurm-{_job_id(proc)}.out").read_text()
    assert proc.returncode == 2, _explain(proc) + output[-3000:]  # sbatch --wait: the job's exit status
    assert "not started by srun (no SLURM_STEP_ID)" in output and "SLURM_NTASKS=2" in output
    assert "srun python -m bench run" in output
    assert not list(out.glob("*.json"))
    _assert_nothing_left(out)


def _suite_job(tmp_path: Path, real_data: Path) -> tuple[str, Path, Path]:
    """Submit slurm/suite.sh (2 nodes x 1 task, no GPU, 10 steps of 1 s each per case); return the job id,
    its output file and run folder, once the job runs."""
    runs = tmp_path / "runs"
    env = {"BENCH_DATA": str(real_data), "BENCH_PRESET": "smoke", "BENCH_RUNS": str(runs),
           "BENCH_TEST_STEP_SLEEP_S": "1.0", "EXTRA_PYTEST_ARGS": "--bench-arg=--train-samples=640 "
                                                                  "--bench-arg=--test-samples=200"}
    args = ["sbatch", "--parsable", f"--output={tmp_path}/slurm-%j.out", "--cpus-per-task=1", "--time=10",
            "--ntasks-per-node=1", "--gres=none", str(REPO / "slurm" / "suite.sh")]
    proc = subprocess.run([str(REPO / "slurm" / "cluster.sh"), "exec", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=60, env={**os.environ, **env})
    assert proc.returncode == 0, _explain(proc)
    job = _job_id(proc)
    _wait_for(lambda: _job_running(job) or _job_gone(job), QUEUE_S, "the job to start")
    return job, tmp_path / f"slurm-{job}.out", runs / f"slurm-{job}"


def _ddp_ranks(run_dir: Path) -> list[psutil.Process]:
    """The running `python -m bench run --case ddp` processes of this run (not their pytest parents)."""
    return [p for p in _procs(run_dir) if "bench" in p.cmdline() and "ddp" in p.cmdline()]


def _wait_ddp_started(job: str, run_dir: Path) -> None:
    _wait_for(lambda: len(_ddp_ranks(run_dir)) >= 2 and list(run_dir.glob("tensorboard/ddp-*")), 600,
              "the ddp ranks to set up")
    time.sleep(3)


def _job_exit(job: str, log: Path) -> int:
    """The batch script's own exit status, from the line suite.sh prints last."""
    text = log.read_text()
    marks = [line for line in text.splitlines() if line.startswith("suite.sh: exit ") or "interrupted; finished" in line]
    assert marks, text[-3000:]
    return 4 if "interrupted; finished" in marks[-1] else int(marks[-1].split()[2])


def test_scancel_of_the_ddp_step_is_recorded_interrupted_by_suite_sh(tmp_path, real_data):
    job, log, run_dir = _suite_job(tmp_path, real_data)
    _wait_ddp_started(job, run_dir)
    step = slurm("squeue", "-h", "-s", "-j", job, "-o", "%i", timeout=30).stdout.split()
    ddp_step = max(step, key=lambda s: int(s.split(".")[1]) if s.split(".")[1].isdigit() else -1)
    t0 = time.monotonic()
    sent = slurm("scancel", ddp_step, timeout=30)  # SIGKILL to every task of the step: no rank can write
    assert sent.returncode == 0, _explain(sent)
    _wait_for(lambda: _job_gone(job), 300, "the job to end")
    print(f"fault-to-exit: scancel of the ddp step under suite.sh (to job end): {time.monotonic() - t0:.1f} s")
    output = log.read_text()
    ddp = [load_result(p) for p in run_dir.glob("ddp-*.json")]
    assert [r["status"] for r in ddp] == ["interrupted"], output[-4000:]
    assert "suite.sh: case 'ddp' interrupted" in output and _job_exit(job, log) == 4, output[-4000:]
    assert [load_result(p)["status"] for p in run_dir.glob("baseline-*.json")] == ["ok"]
    _assert_nothing_left(run_dir)


def test_one_nodes_ranks_killed_under_suite_sh_are_named_and_recorded(tmp_path, real_data):
    job, log, run_dir = _suite_job(tmp_path, real_data)
    _wait_ddp_started(job, run_dir)
    node1 = [p for p in _ddp_ranks(run_dir) if p.environ().get("SLURMD_NODENAME") == "node1"]
    assert node1, [(p.pid, p.environ().get("SLURMD_NODENAME")) for p in _ddp_ranks(run_dir)]
    t0 = time.monotonic()
    for p in node1:  # rank 0 (node1's rank): the node "dies"
        p.send_signal(signal.SIGKILL)
    _wait_for(lambda: _job_gone(job), 300, "the job to end")
    print(f"fault-to-exit: node1's rank SIGKILL under suite.sh (to job end): {time.monotonic() - t0:.1f} s")
    output = log.read_text()
    ddp = [load_result(p) for p in run_dir.glob("ddp-*.json")]
    assert [r["status"] for r in ddp] == ["failed"], output[-4000:]
    assert "suite.sh: case 'ddp' failed" in output and _job_exit(job, log) == 1, output[-4000:]
    _assert_nothing_left(run_dir)
