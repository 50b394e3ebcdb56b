"""The straggler named under the real local Slurm cluster (make cluster-up): a 2-node ddp run (one rank a
node, started by srun) whose rank 1, on node2, is put into a cgroup with a CPU quota for its training.
The nodes are network namespaces of this machine, so rank 1's process is visible (and movable) here.

Run (as root, cluster up): .venv/bin/python -m pytest -q -m slurm tests/test_straggler_slurm.py
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bench.measure.wallphases import PHASES
from bench.results.resultfile import format_table, load_result
from tests.test_cluster_smoke import _explain, cluster_up, slurm  # noqa: F401 (fixture)
from tests.test_faults import _assert_nothing_left, _procs
from tests.test_faults_slurm import (PY, QUEUE_S, REPO, _cancel_own_jobs, _job_gone, _job_id,  # noqa: F401 (fixture)
                                     _sbatch)
from tests.test_stopping import SLOWED, _cpu_cgroup, _remove_cgroup

pytestmark = pytest.mark.slurm


def _wait_text(path: Path, text: str, job: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not (path.exists() and text in path.read_text()):
        tail = path.read_text()[-3000:] if path.exists() else ""
        assert time.monotonic() < deadline and not _job_gone(job), (text, tail)
        time.sleep(0.2)


def test_a_slowed_rank_on_node2_is_named_the_straggler(tmp_path):
    made = _cpu_cgroup(f"cifar-bench-slurm-test-{time.monotonic_ns()}", quota_us=5_000)  # 5 % of one CPU
    if made is None:
        pytest.skip("no writable cgroup cpu controller here (needs root): cannot slow a rank")
    folder, procs = made
    out = tmp_path / "out"
    try:
        command = f"srun {PY} -m bench run --case ddp --devices 1 --num-nodes 2 {' '.join(SLOWED)} --out {out}"
        proc = _sbatch(tmp_path, command, "-N2", "--ntasks-per-node=1", "--gres=none", wait=False, timeout=60,
                       env={"PYTHONPATH": str(REPO)})
        assert proc.returncode == 0, _explain(proc)
        job = _job_id(proc)
        log = tmp_path / f"slurm-{job}.out"
        _wait_text(log, "All distributed processes registered", job, QUEUE_S)
        rank1 = [p for p in _procs(out) if p.environ().get("SLURM_PROCID") == "1" and "bench" in p.cmdline()]
        assert len(rank1) == 1, [(p.pid, p.cmdline()) for p in _procs(out)]
        procs.write_text(str(rank1[0].pid))
        _wait_text(log, "ddp: epoch 1/1 done", job, 300)
        (folder.parent / "cgroup.procs").write_text(str(rank1[0].pid))  # back: the rest at full speed
        deadline = time.monotonic() + 300
        while not _job_gone(job):
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
    finally:
        _remove_cgroup(folder, procs)
    results = [load_result(p) for p in out.glob("ddp-*.json")]
    assert [r["status"] for r in results] == ["ok"], log.read_text()[-3000:]
    result = results[0]
    found = result["straggler"]
    assert found["rank"] == 1 and found["host"] == "node2", (found, result["metrics"]["step_breakdown"]["per_rank"])
    assert "straggler: rank 1 on host node2, device cpu, CPUs " in format_table([result])
    phases = result["metrics"]["phases"]  # under srun too, the phases add up to wall_s
    assert all(phases[p] >= 0 for p in PHASES) and abs(phases["remainder_s"]) <= 0.03 * phases["wall_s"], phases
    _assert_nothing_left(out)
