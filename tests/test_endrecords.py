"""The torch-free writer slurm/suite.sh runs in its last seconds (bench/results/endrecords.py).

It runs here as the batch script runs it, with Python's site-packages switched off (``-S``): it must
start without torch, numpy or tabulate, so it finishes well within Slurm's KillWait.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.results.reading import read_records
from bench.results.resultfile import load_result

REPO = Path(__file__).resolve().parents[1]


def _write(out: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-S", "-m", "bench.results.endrecords", "--out", str(out), "--job", "41",
                           "--preset", "smoke", "--data", "synthetic", "--nodes", "2", "--tasks-per-node", "2", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=120)


def test_every_unfinished_step_gets_one_record_and_finished_ones_are_kept(tmp_path):
    own = {"schema": "cifar-bench/result", "schema_version": 1, "run_id": "baseline-job41.0-r0", "case": "baseline",
           "status": "ok", "reason": None, "config": {}, "metrics": {}, "environment": {}}
    (tmp_path / "baseline-job41.0-r0.json").write_text(json.dumps(own))
    proc = _write(tmp_path, "--step", "baseline:1:x", "--step", "ddp:1:stopped: scancel", "--step", "ddp:2:not started",
                  "--running", "ddp:1:2", "--wait-s", "0.2")
    assert proc.returncode == 0, proc.stderr
    names = sorted(p.name for p in tmp_path.glob("*.json"))
    # the running step's record takes its ranks' run id (step 2); the other its suite id; the finished one is kept
    assert names == ["baseline-job41.0-r0.json", "ddp-job41.2-r0.json", "ddp-job41.suite-r1.json"], names
    assert load_result(tmp_path / "baseline-job41.0-r0.json")["status"] == "ok"
    ddp = load_result(tmp_path / "ddp-job41.2-r0.json")
    assert ddp["status"] == "interrupted" and ddp["reason"] == "stopped: scancel"
    assert ddp["config"]["devices"] == 2 and ddp["config"]["num_nodes"] == 2 and ddp["config"]["data_kind"] == "unknown"
    assert "torch-free" in ddp["environment"]["recorded_by"]
    records = read_records([str(p) for p in tmp_path.glob("ddp-*.json")])
    assert sorted((r.case, r.status) for r in records) == [("ddp", "interrupted")] * 2
    assert not any(r.valid for r in records) and all(r.devices == 4 and r.nodes == 2 for r in records)


def test_a_record_written_by_the_ranks_meanwhile_wins(tmp_path):
    theirs = {"schema": "cifar-bench/result", "schema_version": 1, "run_id": "ddp-job41.2-r0", "case": "ddp",
              "status": "interrupted", "reason": "SIGTERM on rank 0"}
    late = subprocess.Popen(["bash", "-c", f"sleep 0.5; echo '{json.dumps(theirs)}' > {tmp_path}/ddp-job41.2-r0.json"])
    proc = _write(tmp_path, "--step", "ddp:1:stopped", "--running", "ddp:1:2", "--wait-s", "30")
    late.wait(timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert [p.name for p in tmp_path.glob("*.json")] == ["ddp-job41.2-r0.json"]
    assert load_result(tmp_path / "ddp-job41.2-r0.json")["reason"] == "SIGTERM on rank 0"


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    proc = _write(tmp_path, "--step", "nosuch:1:x")
    assert proc.returncode == 2 and "expected CASE:ROUND" in proc.stderr
    bad_preset = subprocess.run([sys.executable, "-S", "-m", "bench.results.endrecords", "--out", str(tmp_path),
                                 "--job", "1", "--preset", "huge", "--data", "synthetic", "--step", "ddp:1:x"],
                                cwd=REPO, capture_output=True, text=True, timeout=120)
    assert bad_preset.returncode == 2 and "preset" in bad_preset.stderr and "Traceback" not in bad_preset.stderr
    assert not list(tmp_path.glob("*.json"))
