"""SIGTERM stops every rank at the same step without a per-step synchronisation (bench/run/stopping.py),
and the host reads of a training step are counted (bench/measure/stepreads.py).

Each run is bounded in time and checks that no process of the run is left (tests/test_faults.py's helpers).
Run: .venv/bin/python -m pytest -q tests/test_stopping.py
"""

from __future__ import annotations

import json
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import psutil

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


def _host_reads(tmp_path: Path, case: str) -> list[dict]:
    folder, out = tmp_path / f"reads-{case}", tmp_path / f"out-{case}"
    devices = ("--devices", "2") if case == "ddp" else ()
    command = [sys.executable, "-m", "bench", "run", "--case", case, *devices, *SMALL_WORKERS, "--out", str(out)]
    proc = subprocess.run(command,
                          cwd=REPO, env=_env(BENCH_TEST_HOST_READS_DIR=str(folder)), capture_output=True, text=True,
                          timeout=RUN_TIMEOUT_S)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert json.loads(next(out.glob("*.json")).read_text())["test_knobs"]["BENCH_TEST_HOST_READS_DIR"] == str(folder)
    return [json.loads(p.read_text()) for p in sorted(folder.glob("rank*.json"))]


def test_a_training_step_reads_the_host_as_often_in_ddp_as_in_baseline(tmp_path):
    # Lightning's per-step SIGTERM broadcast read its flag back with .item() every ddp step (2 reads a step
    # there, 1 in baseline): replaced, a ddp step reads no more than a baseline step. The one read left is
    # the batch sampler's list of indices (bench/data/sampling.py, a CPU tensor: no device read on a GPU).
    for case, world in (("baseline", 1), ("ddp", 2)):
        ranks = _host_reads(tmp_path, case)
        assert [r["rank"] for r in ranks] == list(range(world))
        for r in ranks:
            assert len(r["per_step"]) == 10, r  # 640 images / 64 a global batch
            assert statistics.median(r["per_step"]) == 1, (case, r)
            typical = Counter(tuple(sorted(step.items())) for step in r["step_names"]).most_common(1)[0][0]
            assert typical == (("Tensor.tolist", 1),), (case, r["step_names"])


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
