"""SIGTERM stops every rank at the same step without a per-step synchronisation (bench/run/stopping.py),
the host reads of a training step are counted (bench/measure/stepreads.py), and real runs' wall time
in phases (bench/measure/phases.py) and straggler (bench/results/straggler.py; a rank slowed by a cgroup
CPU quota) are checked. The pure rules' tests with literal numbers: tests/test_phases_straggler.py.

Each run is bounded in time and checks that no process of the run is left (tests/test_faults.py's helpers).
Run: .venv/bin/python -m pytest -q tests/test_stopping.py
"""

from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import psutil
import pytest

from bench.measure.wallphases import PHASES
from bench.results.resultfile import format_table
from bench.run import stopping
from tests.conftest import REPO
from tests.test_faults import (LONG, RUN_TIMEOUT_S, SLOW_STEPS, _assert_nothing_left, _child, _env, _finish, _log,
                               _only_result, _start, _wait_training)

SMALL_WORKERS = ("--data", "synthetic", "--preset", "smoke", "--train-samples", "640", "--test-samples", "200",
                 "--num-workers", "1")  # a loader worker: the data path's own reads stay out of the training process


def test_the_patched_lightning_methods_are_the_ones_this_was_written_for():
    # A Lightning upgrade that changes or removes them fails here: read the new source, check that
    # bench/run/stopping.py still replaces what it must, then update PATCHED (docs/where-the-time-goes.md).
    assert stopping.check_lightning() == []


def test_the_lightning_check_names_a_changed_or_missing_method(monkeypatch):
    dotted = next(iter(stopping.PATCHED))
    monkeypatch.setattr(stopping, "PATCHED", {dotted: "0" * 64, "lightning.pytorch.loops.NoSuchLoop.advance": "0" * 64})
    monkeypatch.setattr(stopping, "CALL_SITES", {
        "lightning.pytorch.loops.training_epoch_loop._TrainingEpochLoop.advance": "self._no_such_call()"})
    changed = stopping.check_lightning()
    assert changed[0].startswith(f"{dotted}: source changed (sha256 ")
    assert changed[1] == "lightning.pytorch.loops.NoSuchLoop.advance: gone"
    assert changed[2].endswith("advance: no longer calls self._no_such_call()")


def test_received_by_names_the_ranks_that_got_the_signal():
    assert stopping.received_by(np.array([0, 1], dtype=np.int32)) == "received by rank 1"
    assert stopping.received_by(np.array([1, 0, 0, 1])) == "received by ranks 0, 3"


@pytest.fixture(scope="module")
def knob_runs(tmp_path_factory) -> dict[str, tuple[list[dict], dict]]:
    """A baseline and a ddp run (2 ranks) with host reads counted: {case: (each rank's reads, result)}.
    Their phases and (ddp) straggler are checked too, so that the three checks pay for two runs."""
    tmp, runs = tmp_path_factory.mktemp("knob-runs"), {}
    for case in ("baseline", "ddp"):
        folder, out = tmp / f"reads-{case}", tmp / f"out-{case}"
        devices = ("--devices", "2") if case == "ddp" else ()
        command = [sys.executable, "-m", "bench", "run", "--case", case, *devices, *SMALL_WORKERS, "--out", str(out)]
        proc = subprocess.run(command, cwd=REPO, env=_env(BENCH_TEST_HOST_READS_DIR=str(folder)), capture_output=True,
                              text=True, timeout=RUN_TIMEOUT_S)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
        result = json.loads(next(out.glob("*.json")).read_text())
        assert result["test_knobs"]["BENCH_TEST_HOST_READS_DIR"] == str(folder)
        runs[case] = ([json.loads(p.read_text()) for p in sorted(folder.glob("rank*.json"))], result)
    return runs


def test_a_training_step_reads_the_host_as_often_in_ddp_as_in_baseline(knob_runs):
    # Lightning's per-step SIGTERM broadcast read its flag back with .item() every ddp step (2 reads a step
    # there, 1 in baseline): replaced, a ddp step reads no more than a baseline step. The one read left is
    # the batch sampler's list of indices (bench/data/sampling.py, a CPU tensor: no device read on a GPU).
    for case, world in (("baseline", 1), ("ddp", 2)):
        ranks = knob_runs[case][0]
        assert [r["rank"] for r in ranks] == list(range(world))
        for r in ranks:
            assert len(r["per_step"]) == 10, r  # 640 images / 64 a global batch
            assert statistics.median(r["per_step"]) == 1, (case, r)
            typical = Counter(tuple(sorted(step.items())) for step in r["step_names"]).most_common(1)[0][0]
            assert typical == (("Tensor.tolist", 1),), (case, r["step_names"])


def test_the_phases_of_a_baseline_and_a_ddp_run_add_up_to_their_wall_time(knob_runs):
    for case in ("baseline", "ddp"):
        result = knob_runs[case][1]
        phases, metrics = result["metrics"]["phases"], result["metrics"]
        assert phases["wall_s"] == metrics["wall_s"]
        assert all(phases[p] >= 0 for p in PHASES), phases
        assert abs(phases["remainder_s"]) <= 0.03 * metrics["wall_s"], phases  # the 3 %
        named = sum(phases[p] for p in PHASES)
        assert named == pytest.approx(metrics["wall_s"], rel=0.03)
        # the fit phase is the timer's window (its barriers inside): never shorter than fit_s less a barrier
        assert phases["fit_s"] >= 0.9 * metrics["fit_s"] and phases["import_s"] > 0 and phases["test_s"] > 0, phases
        assert f"{result['run_id']}: wall time: import " in format_table([result])


def test_an_unslowed_ddp_run_names_no_straggler(tmp_path):
    # a plain run (no loader workers: 2 ranks on the 2 cores; with a worker each on the busy machine, one rank
    # waited 62 % of a step for the other: a real straggler, made by a starved worker), no knob
    out = tmp_path / "out"
    proc = _start(out, "--case", "ddp", "--devices", "2", *SLOWED)
    proc.wait(timeout=RUN_TIMEOUT_S)
    assert proc.returncode == 0, _log(out)[-3000:]
    result = _only_result(out)
    assert result["straggler"]["rank"] is None and result["straggler"]["why"].startswith("none: "), result["straggler"]
    assert f"{result['run_id']}: straggler: none: " in format_table([result])
    _assert_nothing_left(out)


SLOWED = ("--data", "synthetic", "--preset", "smoke", "--train-samples", "640", "--test-samples", "200")  # 10 steps


def _wait_log(proc: subprocess.Popen, out: Path, text: str) -> None:
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while text not in _log(out):
        assert proc.poll() is None and time.monotonic() < deadline, (text, _log(out)[-3000:])
        time.sleep(0.1)


def _cpu_cgroup(name: str, quota_us: int, period_us: int = 100_000) -> tuple[Path, Path] | None:
    """A new cgroup with a CPU quota (v1 cpu controller, else v2): (its folder, its procs file); None if
    this machine does not let us (not root, no cpu controller)."""
    v1 = Path("/sys/fs/cgroup/cpu")
    try:
        if (v1 / "cpu.cfs_quota_us").exists():
            folder = v1 / name
            folder.mkdir()
            (folder / "cpu.cfs_period_us").write_text(str(period_us))
            (folder / "cpu.cfs_quota_us").write_text(str(quota_us))
        else:
            folder = Path("/sys/fs/cgroup") / name
            folder.mkdir()
            (folder / "cpu.max").write_text(f"{quota_us} {period_us}")
        return folder, folder / "cgroup.procs"
    except OSError:
        return None


def _remove_cgroup(folder: Path, procs: Path) -> None:
    """Kill what is left in the cgroup (a failed test's rank), then remove its folder (bounded wait)."""
    for pid in procs.read_text().split() if procs.exists() else []:
        psutil.Process(int(pid)).kill()
    deadline = time.monotonic() + 15
    while folder.exists():
        try:
            folder.rmdir()
        except OSError:
            assert time.monotonic() < deadline, f"cannot remove {folder}"
            time.sleep(0.2)


def test_a_rank_slowed_by_a_cgroup_cpu_quota_is_named_the_straggler(tmp_path):
    # 5 % of one CPU: below any fair share this 2-core machine gives a rank, however busy it is (at a load of 14
    # a rank gets about 15 %: a quota of 25 % did not bind there); for the training only, then released
    made = _cpu_cgroup(f"cifar-bench-test-{os.getpid()}", quota_us=5_000)
    if made is None:
        pytest.skip("no writable cgroup cpu controller here (needs root): the straggler test cannot slow a rank")
    folder, procs = made
    out = tmp_path / "out"
    try:
        proc = _start(out, "--case", "ddp", "--devices", "2", *SLOWED)
        _wait_log(proc, out, "All distributed processes registered")  # rank 1 exists; its steps are to come
        rank1 = _child(psutil.Process(proc.pid), 1)
        procs.write_text(str(rank1.pid))  # the whole process (its threads, later its loader workers)
        _wait_log(proc, out, "ddp: epoch 1/1 done")
        (folder.parent / "cgroup.procs").write_text(str(rank1.pid))  # back: the test pass at full speed
        proc.wait(timeout=RUN_TIMEOUT_S)
        assert proc.returncode == 0, _log(out)[-3000:]
    finally:
        _remove_cgroup(folder, procs)
    result = _only_result(out)  # (maybe tainted: the machine is shared; its straggler is named all the same)
    found = result["straggler"]
    assert found["rank"] == 1, (found, result["metrics"]["step_breakdown"]["per_rank"])
    assert found["host"] == socket.gethostname() and found["device"] == "cpu" and found["cpus"], found
    assert "cpu_max" in found, found  # (read at the start of training: "5000 100000" once rank 1 is in the cgroup)
    assert f"straggler: rank 1 on host {socket.gethostname()}, device cpu, CPUs " in format_table([result])
    _assert_nothing_left(out)


def _sigterm_one_rank(tmp_path: Path, rank: int) -> None:
    out = tmp_path / "out"
    proc = _start(out, "--case", "ddp", "--devices", "2", *LONG, env=SLOW_STEPS)
    rank0 = _wait_training(proc, out, 2)
    target = rank0 if rank == 0 else _child(rank0, 1)
    other = _child(rank0, 1) if rank == 0 else rank0
    t0 = time.monotonic()
    target.send_signal(signal.SIGTERM)
    _finish(proc, f"SIGTERM to rank {rank} alone", t0)
    try:
        other.wait(timeout=30)
    except psutil.TimeoutExpired:
        raise AssertionError(f"rank {1 - rank} still running 30 s after rank 0 ended") from None
    assert proc.returncode == 4, _log(out)[-3000:]
    r = _only_result(out)
    assert r["status"] == "interrupted", r
    assert r["reason"] == f"SIGTERM (Slurm's time limit or scancel, or kill; received by rank {rank}) during the run", r
    _assert_nothing_left(out)


def test_sigterm_to_rank1_alone_stops_every_rank_interrupted(tmp_path):
    # (to rank 0 alone: tests/test_faults.py::test_a_signal_interrupts_every_rank_with_status_4_and_is_named)
    _sigterm_one_rank(tmp_path, 1)
