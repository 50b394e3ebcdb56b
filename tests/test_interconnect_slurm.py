"""The interconnect check on the real local 2-node Slurm cluster (make cluster-up), gloo on CPU.

One job runs a 2-node ddp case (its result carries the table and the node pair), records a baseline from
that result and runs ``cifar-bench comm`` under srun against it: the link unchanged, "interconnect ok". A
second job runs the same ``comm`` with node2's link rate-limited on purpose (``tc qdisc ... tbf rate
100mbit`` on its veth, inside its network namespace, removed afterwards): "interconnect degraded",
naming the pair node1-node2.

The tolerance is 50 %: the busy shared machine moves loopback figures by tens of percent, while the
rate limit takes the link from hundreds of MB/s to 12.5 MB/s (-90 % or more).

Run (as root, cluster up): .venv/bin/python -m pytest -q -m slurm tests/test_interconnect_slurm.py
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.test_cluster_smoke import _explain, cluster_up, slurm  # noqa: F401 (fixture)

pytestmark = pytest.mark.slurm
REPO = Path(__file__).resolve().parents[1]
PY = REPO / ".venv" / "bin" / "python"
SMALL = "--data synthetic --preset smoke --train-samples 640 --test-samples 200"
SLOW_LINK = ["tc", "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", "100mbit", "burst", "64kb", "latency", "400ms"]


def _job(tmp_path: Path, name: str, script: str, env: dict | None = None) -> tuple[int, str]:
    """Run ``script`` as a 2-node job (1 task per node), wait; return its exit status and output."""
    path = tmp_path / f"{name}.sh"
    path.write_text(f"#!/bin/bash\nset -u\nexport PYTHONPATH={REPO}\n{script}\n")
    args = ["sbatch", "--parsable", "--wait", f"--output={tmp_path}/{name}-%j.out", "--time=10", "--cpus-per-task=1",
            "-N2", "--ntasks-per-node=1", f"--chdir={REPO}", str(path)]
    proc = subprocess.run([str(REPO / "slurm" / "cluster.sh"), "exec", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=900, env={**os.environ, **(env or {})})
    job = proc.stdout.strip().splitlines()[0].split(";")[0] if proc.stdout.strip() else "none"
    out = tmp_path / f"{name}-{job}.out"
    return proc.returncode, (out.read_text() if out.exists() else "") + _explain(proc)


def _netns(node: str, *command: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", node, *command], capture_output=True, text=True, timeout=30)


def test_two_node_ddp_and_comm_carry_the_pair_and_a_slowed_link_is_flagged(tmp_path):
    runs, comm_json, baselines = tmp_path / "runs", tmp_path / "comm.json", tmp_path / "baselines"
    baselines.mkdir()
    judge = f"srun {PY} -m bench comm --baseline {baselines}/cluster.json --tolerance 50"
    # one job: a 2-node ddp run, a baseline recorded from its result, then comm judged against it (unchanged link)
    status, output = _job(tmp_path, "measure",
                          f"srun {PY} -m bench run --case ddp --devices 1 --num-nodes 2 {SMALL} --comm-check "
                          f"--out {runs} && {PY} -m bench baseline record {runs}/ddp-*.json --name cluster && "
                          f"{judge} --out {comm_json}", env={"BENCH_BASELINES": str(baselines)})
    assert status == 0, output[-4000:]
    (result_path,) = sorted(runs.glob("ddp-*.json"))
    check = json.loads(result_path.read_text())["interconnect"]
    assert check["status"] == "measured" and check["nodes"] == ["node1", "node2"] and check["world_size"] == 2
    assert check["pairs"][0]["nodes"] == ["node1", "node2"] and check["pairs"][0]["same_as_world"]
    alone = json.loads(comm_json.read_text())["interconnect"]
    assert alone["nodes"] == ["node1", "node2"] and alone["pairs"][0]["table"]
    assert "busbw [GB/s]" in output and "interconnect ok (transport TCP (gloo)" in output, output[-4000:]

    slowed = _netns("node2", *SLOW_LINK)
    assert slowed.returncode == 0, slowed.stderr
    try:
        status, output = _job(tmp_path, "slowed", judge)
    finally:
        _netns("node2", "tc", "qdisc", "del", "dev", "eth0", "root")
    assert status == 1, output[-4000:]
    assert "interconnect degraded at all ranks, node pair node1-node2 (transport TCP (gloo)" in output, output[-4000:]
    assert "tbf" not in _netns("node2", "tc", "qdisc", "show", "dev", "eth0").stdout  # the link is restored
