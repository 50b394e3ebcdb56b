"""`sbatch slurm/ab.sh` on the real local 2-node Slurm cluster (make cluster-up), on CPU.

One A/B pair set in one allocation: the ddp case on both nodes (one rank each), 3 pairs, side B with
NCCL_ALGO=Ring set, which the CPU backend (gloo) never reads: for the timing, the same environment on
both sides, which must never be a regression; the variable must reach B's ranks (recorded by every run
in world.comm_env) and be named under "what changed". The smoke preset on a small subset of the real
CIFAR-10 images. Every run is its own srun step of the one job, on the same two nodes.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from bench.results.resultfile import load_result
from tests.test_cluster_smoke import _explain, cluster_up  # noqa: F401 (fixture)

pytestmark = pytest.mark.slurm
REPO = Path(__file__).resolve().parents[1]


def test_ab_job_runs_every_pair_as_steps_of_one_allocation(tmp_path, real_data):
    env = {**os.environ, "BENCH_DATA": str(real_data), "BENCH_PRESET": "smoke", "BENCH_RUNS": str(tmp_path / "runs"),
           "EXTRA_RUN_ARGS": "--train-samples 640 --test-samples 100", "AB_PAIRS": "3", "AB_B_ENV": "NCCL_ALGO=Ring"}
    args = ["sbatch", "--parsable", "--wait", f"--output={tmp_path}/slurm-%j.out", "--ntasks-per-node=1",
            "--gres=gpu:1", "--cpus-per-task=1", "--time=15", str(REPO / "slurm" / "ab.sh")]
    proc = subprocess.run([str(REPO / "slurm" / "cluster.sh"), "exec", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
    job = proc.stdout.strip().splitlines()[0].split(";")[0]
    output = (tmp_path / f"slurm-{job}.out").read_text()
    assert proc.returncode == 0, _explain(proc) + output[-4000:]  # no regression (exit 0); 1 would be a false alarm
    run_dir = tmp_path / "runs" / f"ab-{job}"
    manifest = json.loads((run_dir / "ab.json").read_text())
    assert [p["order"] for p in manifest["pairs"]] == ["AB", "BA", "AB"]
    assert manifest["rows"][0]["verdict"] in ("unchanged", "inconclusive", "slower", "faster"), output[-4000:]
    for side in ("A", "B"):
        results = [load_result(p) for p in sorted((run_dir / side).glob("ddp-ab*.json"))]
        assert len(results) == 3 and {r["status"] for r in results} == {"ok"}, output[-4000:]
        for r in results:  # every run a step of this job, on both nodes, the side's variable reaching the ranks
            assert r["environment"]["slurm"]["SLURM_JOB_ID"] == job and r["world"]["world_size"] == 2
            assert sorted(set(r["world"]["hostnames"])) == ["node1", "node2"]
            assert r["world"]["comm_env"].get("NCCL_ALGO") == ("Ring" if side == "B" else None)
    assert "NCCL_ALGO: unset -> Ring" in output and "ratio B/A" in output
