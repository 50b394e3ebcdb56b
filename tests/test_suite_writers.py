"""`make bench ROUNDS=2` interleaves the rounds of its cases, and holds its results folder alone.

Run:  .venv/bin/python -m pytest -q tests/test_suite_writers.py
      (one `make bench PRESET=smoke ROUNDS=2` on synthetic data: baseline and ddp twice each, dp skipped
      on CPU; meanwhile a second suite and a `cifar-bench run` into its folder, both refused at once)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.results.reading import read_records
from bench.results.writerlock import LOCK_NAME
from tests.conftest import REPO, run_cli

SMALL = "--train-samples=1024 --test-samples=200"


def _wait_for(path: Path, proc: subprocess.Popen, timeout_s: float = 300.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert proc.poll() is None, "the first make bench ended before it took its folder"
        assert time.monotonic() < deadline, f"no {path} after {timeout_s} s"
        time.sleep(0.2)


def test_make_bench_rounds_interleave_and_a_second_writer_is_refused(tmp_path: Path):
    if shutil.which("make") is None or subprocess.run(["make", "-q", "setup"], cwd=REPO).returncode != 0:
        pytest.skip("make, or an up-to-date `make setup`, is missing")
    runs = tmp_path / "runs"
    log = tmp_path / "first.log"
    with log.open("w") as sink:
        first = subprocess.Popen(["make", "-s", "bench", "PRESET=smoke", "ROUNDS=2", f"RUNS={runs}", "BENCH_DATA=synthetic",
                                  f"BENCH_ARGS={SMALL}"], cwd=REPO, stdout=sink, stderr=subprocess.STDOUT)
    try:
        _wait_for(runs / LOCK_NAME, first)
        holder = json.loads((runs / LOCK_NAME).read_text())
        second = subprocess.run([sys.executable, "-m", "pytest", "suite", "-p", "no:cacheprovider", "-q",
                                 "--bench-preset", "smoke", "--bench-data", "synthetic", "--bench-out", str(runs),
                                 f"--benchmark-json={runs / 'suite.json'}"], cwd=REPO, capture_output=True, text=True,
                                timeout=300)
        run = run_cli("run", "--case", "baseline", "--preset", "smoke", "--data", "synthetic", "--out", str(runs))
        still_running = first.poll() is None
    finally:
        first.wait(timeout=900)
    out = log.read_text()
    assert first.returncode == 0, out[-4000:]
    assert still_running, "the first make bench ended before the second writers tried: nothing was tested"
    for proc in (second, run):  # refused at once, naming the writer and what to do
        said = proc.stdout + proc.stderr
        assert proc.returncode == 2, said[-3000:]
        assert f"is being written by another run: 'pytest suite (make bench)" in said, said[-3000:]
        assert f"pid {holder['pid']} on {holder['host']}" in said and "name another folder" in said
    assert not (runs / LOCK_NAME).exists()  # released at the end

    # the output: round 1 of every case, then round 2 (dp is skipped on CPU)
    shown = [line.split("] ", 1)[1].split(" (")[0] for line in out.splitlines() if line.startswith("[round ")]
    assert shown == ["baseline", "ddp", "baseline", "ddp"], out[-4000:]
    assert "order of the rounds (interleaved): baseline round 1, ddp round 1, baseline round 2, ddp round 2" in out

    # the records: suite.json is the first's, each round once, in the order they ran
    suite = json.loads((runs / "suite.json").read_text())
    entries = sorted(suite["benchmarks"], key=lambda b: b["extra_info"]["order"])
    assert [(b["extra_info"]["case"], b["extra_info"]["round"]) for b in entries] == [
        ("baseline", 1), ("ddp", 1), ("baseline", 2), ("ddp", 2)]
    started = [json.loads(Path(b["extra_info"]["result_paths"][0]).read_text())["started_utc"] for b in entries]
    assert started == sorted(started)
    records = read_records([runs / "suite.json", *runs.glob("*-r[01].json")])
    assert sorted((r.case, r.valid) for r in records) == [("baseline", True)] * 2 + [("ddp", True)] * 2 + [("dp", False)]
    assert {os.path.basename(b["extra_info"]["result_paths"][0]) for b in entries} <= {p.name for p in runs.glob("*.json")}
