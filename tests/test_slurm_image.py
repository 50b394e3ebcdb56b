"""Every rank in the image: `CIFAR_SIF=cifar.sif sbatch slurm/suite.sh` on the real local 2-node cluster.

Each srun step runs `apptainer exec ... cifar.sif python -m pytest suite ...` on its nodes (ddp: 2 nodes x
2 ranks, gloo across the nodes' network namespaces); the test reads back, from the results, the image
identity (environment.container_image_id, the SIF header ID container/image-id.sh reads on the batch
host) and the Python prefix of every rank (world.runtime_per_rank), and checks the report and the exit
line. The SIF is the session's one (fixture ``sif``, tests/sif_image.py; CIFAR_TEST_SIF=PATH reuses one).
Runs as root (the host-side apptainer of container/apptainer enters its tree as root); cluster up.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from bench.results.resultfile import load_result
from tests.test_cluster_smoke import _explain, cluster_up  # noqa: F401 (fixture)

pytestmark = [pytest.mark.slurm, pytest.mark.container]
REPO = Path(__file__).resolve().parents[1]


def _image_prefix(sif: Path) -> str:
    proc = subprocess.run(["apptainer", "exec", str(sif), "python", "-c", "import sys; print(sys.prefix)"],
                          capture_output=True, text=True, timeout=300, cwd="/tmp")
    assert proc.returncode == 0, _explain(proc)
    return proc.stdout.strip().splitlines()[-1]


def test_every_rank_of_the_suite_runs_inside_the_image(request, tmp_path, real_data):
    sif = request.getfixturevalue("sif")  # after cluster_up: a session fixture asked for here would come first
    prefix = _image_prefix(sif["path"])
    host_prefix = str((REPO / ".venv").resolve())
    assert prefix != host_prefix
    env = {**os.environ, "CIFAR_SIF": str(sif["path"]), "BENCH_DATA": str(real_data), "BENCH_PRESET": "smoke",
           "BENCH_RUNS": str(tmp_path / "runs")}
    env.pop("BENCH_IMAGE_ID", None)  # read by the job itself, on the batch host
    args = ["sbatch", "--parsable", "--wait", f"--output={tmp_path}/slurm-%j.out", "--cpus-per-task=1", "--time=20",
            str(REPO / "slurm" / "suite.sh")]
    proc = subprocess.run([str(REPO / "slurm" / "cluster.sh"), "exec", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=1800)
    job = proc.stdout.strip().splitlines()[0].split(";")[0]
    output = (tmp_path / f"slurm-{job}.out").read_text()
    assert proc.returncode == 0, _explain(proc) + output[-5000:]
    assert f"run in {sif['path']} {sif['id']}" in output and output.splitlines()[-1].startswith("suite.sh: exit 0")
    run_dir = tmp_path / "runs" / f"slurm-{job}"
    results = {r["case"]: r for r in (load_result(p) for p in run_dir.glob("*-job*.json"))}
    assert sorted(results) == ["baseline", "ddp", "dp"] and results["baseline"]["status"] == "ok"
    for case, result in results.items():  # rank 0 of every step: in the image
        env_facts = result["environment"]
        assert env_facts["container_runtime"] == "apptainer" and env_facts["container_image_id"] == sif["id"], case
        assert env_facts["python_prefix"] == prefix and env_facts["code_path"] == str(REPO), (case, env_facts)
    ddp = results["ddp"]
    assert ddp["status"] == "ok" and ddp["world"]["world_size"] == 4
    assert sorted(ddp["world"]["hostnames"]) == ["node1", "node1", "node2", "node2"]
    per_rank = ddp["world"]["runtime_per_rank"]
    assert len(per_rank) == 4 and all(r["container_runtime"] == "apptainer" and r["container_image_id"] == sif["id"]
                                      and r["python_prefix"] == prefix for r in per_rank), per_rank
    assert (run_dir / "report.md").is_file() and (run_dir / "report.png").is_file()
