"""The suite (so make bench and slurm/suite.sh) adds every run to the history by itself (bench.history.store
.add_automatically from suite/conftest.py), into $BENCH_HISTORY (BENCH_HISTORY=off: tests/test_history.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bench.history import store

REPO = Path(__file__).resolve().parent.parent
FAST = ["--bench-preset", "smoke", "--bench-data", "synthetic", "--bench-arg=--train-samples=512",
        "--bench-arg=--test-samples=100"]


def _suite(tmp_path: Path, history: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pytest", "suite", "-p", "no:cacheprovider", "-q", "-k", "test_baseline or test_dp",
           "--bench-out", str(tmp_path / "runs"), *FAST]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900,
                          env={**os.environ, store.ENV: history})


def test_the_suite_adds_its_runs_to_the_history(tmp_path):
    proc = _suite(tmp_path, str(tmp_path / "hist"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert f"history: 2 run(s) added to {tmp_path / 'hist'}" in proc.stderr
    entries, skipped = store.load(tmp_path / "hist")
    written = sorted(p.stem for p in (tmp_path / "runs").glob("*.json"))
    assert sorted(e["result"]["run_id"] for e in entries) == written and skipped == []
    assert sorted(e["result"]["status"] for e in entries) == ["ok", "skipped"]  # dp: no GPUs here, kept as such

