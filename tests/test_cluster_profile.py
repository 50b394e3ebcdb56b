"""`--profile` of a DDP run on 2 nodes of the real local Slurm cluster (make cluster-up), on CPU.

Run (as root, cluster up):  slurm/cluster.sh up && python3 -m pytest tests/test_cluster_profile.py -v
Four srun tasks (2 per node) are the ranks, as slurm/suite.sh starts them; each global rank must
write its own trace, although local ranks 0 and 1 exist on both nodes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.results.resultfile import load_result
from tests.test_cluster_smoke import CLUSTER, REPO, _explain, cluster_up  # noqa: F401 (fixture)

pytestmark = pytest.mark.slurm


def test_profile_on_two_nodes_writes_one_trace_per_global_rank(tmp_path):
    out = tmp_path / "runs"
    srun = ["srun", "-N2", "--ntasks-per-node=2", "--cpus-per-task=1", "--time=10",
            sys.executable, "-m", "bench", "run", "--case", "ddp", "--devices", "2", "--num-nodes", "2",
            "--data", "synthetic", "--preset", "smoke", "--train-samples", "1280", "--test-samples", "200",
            "--profile", "--out", str(out)]
    proc = subprocess.run([str(CLUSTER), "exec", *srun], cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, _explain(proc)
    [path] = sorted(out.glob("ddp-*.json"))
    r = load_result(path)
    assert r["status"] == "ok" and r["profiled"] and r["world"]["world_size"] == 4
    per_rank = r["profile"]["per_rank"]
    assert [(e["rank"], e["hostname"]) for e in per_rank] == [(0, "node1"), (1, "node1"), (2, "node2"), (3, "node2")]
    traces = [Path(e["trace"]) for e in per_rank]
    assert [t.parent.name for t in traces] == ["rank0", "rank1", "rank2", "rank3"]
    for rank, trace in enumerate(traces):
        assert list(trace.parent.glob("*.pt.trace.json")) == [trace]  # nothing overwritten
        assert json.loads(trace.read_text())["traceEvents"]
        names = [row["name"] for row in json.loads(Path(per_rank[rank]["tables"]["json"]).read_text())["self_cpu"]]
        assert any("convolution" in n for n in names) and any(n in ("aten::addmm", "aten::mm") for n in names)
    breakdown = r["metrics"]["step_breakdown"]["per_rank"]
    assert [b["hostname"] for b in breakdown] == ["node1", "node1", "node2", "node2"]
    assert all(b["epochs"][0]["allreduce_s"]["sum"] > 0 for b in breakdown)
