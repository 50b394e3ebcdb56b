"""`sbatch slurm/scaling.sh` on the real local 2-node Slurm cluster (make cluster-up), on CPU.

The unmodified script runs the ddp case at 1x1, 1x2, 2x1 and 2x2 (nodes x tasks per node), each
point its own srun step in one allocation, with the smoke preset on a small subset of the real
CIFAR-10 images (about 3 minutes on the 2-core machine: mostly process start-up per point).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from bench.results.resultfile import load_result
from tests.test_cluster_smoke import _explain, cluster_up, slurm  # noqa: F401 (fixture)

pytestmark = pytest.mark.slurm
REPO = Path(__file__).resolve().parents[1]


def _sbatch(tmp_path: Path, real_data: Path, env: dict, timeout: float = 900, wait: bool = True):
    env = {**os.environ, "BENCH_DATA": str(real_data), "BENCH_PRESET": "smoke",
           "BENCH_RUNS": str(tmp_path / "runs"), "EXTRA_RUN_ARGS": "--train-samples 640 --test-samples 100", **env}
    args = ["sbatch", "--parsable", f"--output={tmp_path}/slurm-%j.out", "--cpus-per-task=1", "--time=15",
            *(["--wait"] if wait else []), str(REPO / "slurm" / "scaling.sh")]
    proc = subprocess.run([str(REPO / "slurm" / "cluster.sh"), "exec", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)
    job = proc.stdout.strip().splitlines()[0].split(";")[0]
    return proc, job, (tmp_path / f"slurm-{job}.out").read_text() if wait else ""


def test_scaling_sweep_runs_every_geometry_as_its_own_step(tmp_path, real_data):
    proc, job, output = _sbatch(tmp_path, real_data, {})
    assert proc.returncode == 0, _explain(proc) + output[-4000:]
    run_dir = tmp_path / "runs" / f"scaling-{job}"
    results = [load_result(p) for p in sorted(run_dir.glob("ddp-*.json"))]
    assert len(results) == 4 and {r["status"] for r in results} == {"ok"}  # one result per point
    geometry = {(r["world"]["num_nodes"], r["world"]["devices_per_node"]): r for r in results}
    assert sorted(geometry) == [(1, 1), (1, 2), (2, 1), (2, 2)]
    for (nodes, per_node), r in geometry.items():
        assert r["world"]["world_size"] == nodes * per_node
        hosts = r["world"]["hostnames"]  # reported by the ranks themselves
        assert len(set(hosts)) == nodes and all(hosts.count(h) == per_node for h in set(hosts))
        assert r["config"]["scaling"] == "strong" and r["environment"]["slurm"]["SLURM_JOB_ID"] == job
    assert sorted(set(geometry[2, 2]["world"]["hostnames"])) == ["node1", "node2"]
    steps = {r["run_id"] for r in results}
    assert len(steps) == 4 and all(s.startswith(f"ddp-job{job}.") for s in steps)  # four srun steps, one job
    summary = json.loads((run_dir / "sweep.json").read_text())
    assert {(p["num_nodes"], p["devices"]) for p in summary["points"]} == {(1, 1), (1, 2), (2, 2), (2, 4)}
    assert all(p["valid"] == 1 and p["speedup"] is not None for p in summary["points"])
    assert "| ddp" in (run_dir / "sweep.md").read_text()
    assert (run_dir / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_point_bigger_than_the_job_is_refused_before_launch(tmp_path, real_data):
    proc, job, output = _sbatch(tmp_path, real_data, {"BENCH_POINTS": "1x1 3x2"})  # (the wait bounds queueing too)
    assert proc.returncode != 0
    assert "point 3x2 does not fit the job's 2 node(s) x 2 task(s)" in output
    assert not (tmp_path / "runs" / f"scaling-{job}").exists()  # nothing launched, nothing written


def test_time_limit_signal_keeps_finished_points_and_marks_the_rest(tmp_path, real_data):
    from tests.test_slurm_suite import _wait_for

    proc, job, _ = _sbatch(tmp_path, real_data, {}, timeout=60, wait=False)
    assert proc.returncode == 0, _explain(proc)
    run_dir = tmp_path / "runs" / f"scaling-{job}"
    first = _wait_for(lambda: sorted(run_dir.glob("ddp-*.json")), 1200, "the first point's JSON (queueing included)")[0]
    sent = slurm("scancel", "--signal=USR1", "--batch", job, timeout=30)
    assert sent.returncode == 0, _explain(sent)
    _wait_for(lambda: slurm("squeue", "-h", "-j", job, timeout=30).stdout.strip() == "", 300, "the job to end")
    output = (tmp_path / f"slurm-{job}.out").read_text()
    assert "SIGUSR1" in output and load_result(first)["status"] == "ok"
    records = [load_result(p) for p in sorted(run_dir.glob("ddp-*.json"))]
    geometry = {(r["config"]["num_nodes"], r["config"]["devices"]): r["status"] for r in records}
    assert len(records) == 4 and sorted(geometry) == [(1, 1), (1, 2), (2, 1), (2, 2)], (geometry, output[-3000:])
    assert geometry[1, 1] == "ok" and "interrupted" in geometry.values()
    assert json.loads((run_dir / "sweep.json").read_text())["points"]  # the summary is still written
    assert not list(run_dir.glob(".*.tmp"))
