"""Smoke tests of the local Slurm cluster started by ``slurm/cluster.sh up``.

Run (as root, cluster up):  slurm/cluster.sh up && python3 -m pytest tests/test_cluster_smoke.py -v
Every test is skipped, with the reason, when ``slurm/cluster.sh status`` fails (cluster down).
"""

from __future__ import annotations

import collections
import json
import random
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "slurm" / "cluster.sh"
NODES = ("node1", "node2")


def cluster(*args: str, cwd: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run ``slurm/cluster.sh ARGS...`` and capture its output."""
    return subprocess.run(
        [str(CLUSTER), *args], cwd=cwd or REPO, capture_output=True, text=True, timeout=timeout
    )


def slurm(*args: str, cwd: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run a Slurm client command inside the cluster's controller namespace."""
    return cluster("exec", *args, cwd=cwd, timeout=timeout)


def _explain(proc: subprocess.CompletedProcess) -> str:
    return f"rc={proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"


@pytest.fixture(scope="module", autouse=True)
def cluster_up() -> None:
    try:
        proc = cluster("status", timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"local Slurm cluster not usable ({exc}); start it with: slurm/cluster.sh up")
    if proc.returncode != 0:
        reason = (proc.stderr or proc.stdout).strip().splitlines()
        pytest.skip(
            "local Slurm cluster is not up (`slurm/cluster.sh status` exited "
            f"{proc.returncode}: {reason[-1] if reason else 'no output'}); "
            "start it with: slurm/cluster.sh up"
        )


def node_states() -> dict[str, tuple[str, str]]:
    proc = slurm("sinfo", "-h", "-N", "-o", "%N %t %G")
    assert proc.returncode == 0, _explain(proc)
    states = {}
    for line in proc.stdout.splitlines():
        name, state, gres = line.split()
        states[name] = (state, gres)
    return states


def test_sinfo_shows_two_idle_nodes_with_two_gpus() -> None:
    # a node can be "comp" for a moment after a previous job: poll, bounded
    deadline = time.monotonic() + 20
    while True:
        states = node_states()
        if all(states.get(n, ("", ""))[0] == "idle" for n in NODES) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert states == {n: ("idle", "gpu:2") for n in NODES}


def test_srun_two_tasks_per_node_runs_on_both_nodes() -> None:
    proc = slurm("srun", "-N2", "--ntasks-per-node=2", "hostname")
    assert proc.returncode == 0, _explain(proc)
    assert collections.Counter(proc.stdout.split()) == {"node1": 2, "node2": 2}


def test_sbatch_wait_with_two_gpus_per_node(tmp_path: Path) -> None:
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/sh\nhostname\n")
    script.chmod(0o755)
    proc = slurm(
        "sbatch", "--wait", "--gres=gpu:2", "-N2", "-o", "job-%j.out", str(script),
        cwd=tmp_path, timeout=120,
    )
    assert proc.returncode == 0, _explain(proc)
    assert "Submitted batch job" in proc.stdout
    outputs = list(tmp_path.glob("job-*.out"))  # written in the caller's cwd
    assert len(outputs) == 1, _explain(proc)
    assert outputs[0].read_text().split() == ["node1"]  # the batch step runs on the first node


RENDEZVOUS = textwrap.dedent(
    """
    import json, os, socket, sys, time

    port = int(sys.argv[1])
    rank = int(os.environ["SLURM_PROCID"])
    info = {k: os.environ.get(k) for k in ("SLURM_PROCID", "SLURM_NODEID", "SLURM_NTASKS", "SLURM_LOCALID")}
    info["host"] = socket.gethostname()
    if rank == 0:  # server on the first node
        with socket.create_server(("0.0.0.0", port)) as srv:
            srv.settimeout(30)
            conn, _ = srv.accept()
            with conn:
                info["received"] = conn.recv(64).decode()
                conn.sendall(b"pong")
    elif rank == 3:  # client on the second node, by hostname
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("node1", port), timeout=5) as conn:
                    conn.sendall(b"ping from " + socket.gethostname().encode())
                    info["received"] = conn.recv(64).decode()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    print(json.dumps(info), flush=True)
    """
)


def test_tasks_see_slurm_env_and_reach_first_node_by_hostname(tmp_path: Path) -> None:
    script = tmp_path / "rendezvous.py"
    script.write_text(RENDEZVOUS)
    port = random.randint(20000, 40000)
    proc = slurm(
        "srun", "-N2", "--ntasks-per-node=2", sys.executable, str(script), str(port),
        cwd=tmp_path, timeout=120,
    )
    assert proc.returncode == 0, _explain(proc)
    tasks = sorted((json.loads(line) for line in proc.stdout.splitlines()), key=lambda t: int(t["SLURM_PROCID"]))
    assert [t["SLURM_PROCID"] for t in tasks] == ["0", "1", "2", "3"]
    assert {t["SLURM_NTASKS"] for t in tasks} == {"4"}
    assert [(t["SLURM_NODEID"], t["host"]) for t in tasks] == [
        ("0", "node1"), ("0", "node1"), ("1", "node2"), ("1", "node2"),
    ]
    assert tasks[0]["received"] == "ping from node2"
    assert tasks[3]["received"] == "pong"
