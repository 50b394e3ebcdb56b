"""``cifar-bench ab`` (bench/scaling/ab.py, ab_sides.py): sides, alternation, the answer from ab.json, and real
A/B runs: a side slowed by the step test knob is a regression; the same image twice (CIFAR_TEST_SIF) is not.
The same environment on both sides with real runs is judged on the local Slurm cluster
(tests/test_slurm_ab.py), so that CI runs one set of same-environment pairs, not two.

The real runs (smoke preset, synthetic data, 1024 training images: 16 steps, a fit of ~1 s; each run a
fresh process, ~10-20 s on a busy 2-core machine) are pinned to one CPU core, as in
tests/test_verdicts_e2e.py (one torch thread: far less sensitive to other processes).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from bench.cli import main
from bench.core.config import ConfigError
from bench.run.knobs import STEP_SLEEP_ENV
from bench.scaling.ab_sides import Side, check_options, order, parse_env, run_argv, run_id, side_of
from tests.conftest import run_cli
from tests.results_factory import CPU, result, write
from tests.test_verdicts_e2e import one_core  # noqa: F401 (a fixture)

RUN = ("--data", "synthetic", "--preset", "smoke", "--train-samples", "1024", "--test-samples", "128")
SLEEP_S = 0.05  # per step (16 steps), inside the timed region: ~+80 % on a busy 2-core machine (steps of 40-70 ms)


def test_sides_from_the_command_line():
    side = side_of("B", "apptainer exec 'my image.sif' python", ["NCCL_ALGO=Ring", "X="], "--num-workers 2")
    assert side == Side("B", ("apptainer", "exec", "my image.sif", "python"), {"NCCL_ALGO": "Ring", "X": ""},
                        ("--num-workers", "2"))
    assert side_of("A", None, None, None).command == (sys.executable,)
    assert Side.from_json("B", side.as_json()) == side
    assert "env: NCCL_ALGO=Ring X=" in side.describe()
    for bad in (lambda: parse_env(["NCCL_ALGO"], "A"), lambda: parse_env(["1X=2"], "A"),
                lambda: side_of("A", "", None, None), lambda: side_of("A", None, None, "--out x"),
                lambda: side_of("A", "'unbalanced", None, None)):
        with pytest.raises(ConfigError):
            bad()


def test_the_order_alternates_and_each_run_names_its_side(tmp_path):
    assert [order(i) for i in range(4)] == [("A", "B"), ("B", "A"), ("A", "B"), ("B", "A")]
    assert run_id("ddp", "B", 2, "T") == "ddp-abB-p03-T"
    side = Side("B", ("apptainer", "exec", "x.sif", "python"), {}, ("--num-workers", "1"))
    argv = run_argv(side, ["srun", "-N1"], ["--preset", "smoke"], "baseline", tmp_path)
    assert argv == ["srun", "-N1", "apptainer", "exec", "x.sif", "python", "-m", "bench", "run", "--preset", "smoke",
                    "--case", "baseline", "--num-workers", "1", "--out", str(tmp_path.resolve() / "B")]


def test_a_sides_bad_run_options_are_refused_before_anything_runs(tmp_path):
    with pytest.raises(ConfigError, match="side B"):
        check_options(Side("B", args=("--epochs", "-1")), ["--preset", "smoke", "--data", "synthetic"], ["baseline"])
    proc = run_cli("ab", *RUN, "--b-args=--no-such-option", "--out", str(tmp_path / "ab"))
    assert proc.returncode == 2 and "side B" in proc.stderr and not (tmp_path / "ab").exists(), proc.stderr


def test_a_missing_program_or_data_set_is_refused_before_anything_runs(tmp_path):
    # a trial's --b-cmd /nonexistent/python ran side A in full first; a missing --data started 6 runs
    proc = run_cli("ab", *RUN, "--b-cmd", str(tmp_path / "nonexistent" / "python"), "--out", str(tmp_path / "ab"))
    assert proc.returncode == 2 and "side B: the command" in proc.stderr and not (tmp_path / "ab").exists(), proc.stderr
    proc = run_cli("ab", "--preset", "smoke", "--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "ab"))
    assert proc.returncode == 2 and "does not exist" in proc.stderr and not (tmp_path / "ab").exists(), proc.stderr


def _manifest(folder: Path, a_times: list[float], b_times: list[float], b_env: dict) -> Path:
    pairs = []
    for i, (ta, tb) in enumerate(zip(a_times, b_times)):
        (a,) = write(folder / "A", result("baseline", [ta], env=CPU, run_id=f"baseline-abA-p{i + 1:02d}-T"))
        (b,) = write(folder / "B", result("baseline", [tb], env=b_env, run_id=f"baseline-abB-p{i + 1:02d}-T"))
        pairs.append({"pair": i + 1, "case": "baseline", "order": "".join(order(i)), "exit": {"A": 0, "B": 0},
                      "A": str(a.relative_to(folder)), "B": str(b.relative_to(folder))})
    side = {"command": ["python"], "env": {}, "args": []}
    manifest = {"schema": "cifar-bench/ab", "schema_version": 1, "created_utc": "2026-01-01T00:00:00+00:00",
                "tolerance_pct": 10.0, "sides": {"A": side, "B": {**side, "env": {"X": "1"}}}, "cases": ["baseline"],
                "pairs": pairs}
    (folder / "ab.json").write_text(json.dumps(manifest))
    return folder / "ab.json"


def test_from_results_judges_an_ab_json_and_stores_the_rows(tmp_path, capsys):
    path = _manifest(tmp_path, [10.0, 10.1, 9.9, 10.0], [13.0, 13.2, 12.8, 13.1], {**CPU, "torch": "2.15.0"})
    assert main(["ab", "--from-results", str(path)]) == 1
    out = capsys.readouterr().out
    assert "regression" in out and "torch: 2.14.1+cu130 -> 2.15.0" in out and "B: command: python; env: X=1" in out
    rows = json.loads(path.read_text())["rows"]
    assert rows[0]["verdict"] == "regression" and rows[0]["pairs"] == 4
    # a wider tolerance, judged again from the same files: the same runs, now within it
    assert main(["ab", "--from-results", str(path), "--tolerance", "40"]) == 0
    assert json.loads(path.read_text())["rows"][0]["verdict"] in ("slower", "inconclusive")


def test_from_results_refuses_a_file_that_is_no_ab_json(tmp_path, capsys):
    (tmp_path / "x.json").write_text("{}")
    assert main(["ab", "--from-results", str(tmp_path / "x.json")]) == 2
    assert "not an ab.json" in capsys.readouterr().err


def _verdict(out: Path) -> str:
    (row,) = json.loads((out / "ab.json").read_text())["rows"]
    return row["verdict"]


@pytest.mark.slow
def test_a_side_slowed_by_the_step_knob_is_a_regression_with_the_difference_named(tmp_path, cache, one_core):
    out = tmp_path / "ab"
    proc = run_cli("ab", *RUN, "--pairs", "3", "--b-env", f"{STEP_SLEEP_ENV}={SLEEP_S}", "--out", str(out),
                   "--accept-test-knobs", timeout=900)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert _verdict(out) == "regression", proc.stdout[-3000:]
    assert f"test knobs: none -> {STEP_SLEEP_ENV}={SLEEP_S:g}" in proc.stdout
    assert f"env: {STEP_SLEEP_ENV}={SLEEP_S}" in proc.stdout  # the side's definition
    manifest = json.loads((out / "ab.json").read_text())
    row = manifest["rows"][0]
    assert row["ratio"] > 1.15 and row["interval"][0] > 1.0, row
    assert [p["order"] for p in manifest["pairs"]] == ["AB", "BA", "AB"]
    assert len(list((out / "A").glob("baseline-abA-p0*.json"))) == 3 == len(list((out / "B").glob("baseline-abB-*.json")))
    # ordinary result files: `table` reads both sides (B's as runs with test knobs: not a figure)
    table = run_cli("table", *map(str, sorted(out.glob("*/*.json"))))
    assert table.returncode == 0 and "baseline (1 device)" in table.stdout, table.stdout + table.stderr
    # without --accept-test-knobs the slowed runs are no figure: nothing to judge (exit 5)
    assert main(["ab", "--from-results", str(out / "ab.json")]) == 5
    print(proc.stdout[-2500:])


@pytest.mark.skipif(not os.environ.get("CIFAR_TEST_SIF"), reason="needs CIFAR_TEST_SIF=PATH of a SIF (make image)")
def test_two_sif_sides_run_on_this_machine(tmp_path, cache):
    """The same image on both sides (CIFAR_TEST_SIF, as tests/test_apptainer.py): runs, judged, not a regression."""
    sif = os.environ["CIFAR_TEST_SIF"]
    out = tmp_path / "ab"
    proc = run_cli("ab", *RUN, "--pairs", "3", "--a-cmd", f"apptainer exec {sif} python",
                   "--b-cmd", f"apptainer exec {sif} python", "--out", str(out), timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert _verdict(out) in ("unchanged", "inconclusive", "slower", "faster"), proc.stdout[-3000:]
    results = [json.loads(p.read_text()) for p in out.glob("*/*.json")]
    assert len(results) == 6 and all(r["environment"]["container_runtime"] == "apptainer" for r in results)
    print(proc.stdout[-2500:])


def test_an_ab_json_without_a_finished_pair_is_no_pass(tmp_path, capsys):
    path = _manifest(tmp_path, [], [], CPU)
    assert main(["ab", "--from-results", str(path)]) == 5
    assert "no pair that finished" in capsys.readouterr().out


def test_sigterm_stops_the_running_side_and_exits_4(tmp_path):
    """A side whose 'run' only writes its pid and sleeps (python -c ignores the run's words): SIGTERM to ab
    ends it and ab (exit 4, bounded), and leaves no process behind."""
    import signal
    import subprocess
    import time

    pid_file = tmp_path / "side.pid"
    sleeper = f"{sys.executable} -c 'import os, time; open(os.environ[\"PID_FILE\"], \"w\").write(str(os.getpid())); time.sleep(120)'"
    proc = subprocess.Popen([sys.executable, "-m", "bench", "ab", *RUN, "--pairs", "3", "--a-cmd", sleeper,
                             "--a-env", f"PID_FILE={pid_file}",
                             "--out", str(tmp_path / "ab")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.2)
    side_pid = int(pid_file.read_text())
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 4 and "interrupted after 0 pair(s)" in out, out
    assert "nothing to judge (no ab.json" in out and "--from-results" not in out  # none was written
    assert not (tmp_path / "ab" / "ab.json").exists()
    with pytest.raises(ProcessLookupError):
        os.kill(side_pid, 0)  # the side's process was stopped with ab (reaped by ab: no zombie either)
