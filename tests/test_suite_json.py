"""The pytest-benchmark suite as users run it: its JSON, skipped cases, and its own comparison.

Runs `pytest suite` in a child process (small smoke runs), as a user or the Makefile would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import run_cli
from tests.test_faults import default_sigint

REPO = Path(__file__).resolve().parent.parent
FAST = ["--bench-preset", "smoke", "--bench-data", "synthetic", "--bench-arg=--train-samples=2048",
        "--bench-arg=--test-samples=500"]


def _pytest_suite(tmp_path: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pytest", "suite", "-p", "no:cacheprovider", "-q", "-rs", "-k", "test_baseline or test_dp",
           "--bench-out", str(tmp_path / "runs"), *FAST, *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900, env={**os.environ, **(env or {})})


def test_benchmark_json_carries_fit_time_and_lists_skipped_dp(tmp_path):
    out = tmp_path / "out.json"
    storage = tmp_path / "storage"
    # a run id left in the environment (as by an earlier in-process run) must not name the suite's runs
    proc = _pytest_suite(tmp_path, f"--benchmark-json={out}", f"--benchmark-storage=file://{storage}",
                         "--benchmark-autosave", env={"BENCH_RUN_ID": "ddp-left-over"})
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    data = json.loads(out.read_text())
    (bench,) = data["benchmarks"]
    extra = bench["extra_info"]
    assert bench["name"] == "test_baseline" and extra["case"] == "baseline"
    assert extra["fit_s"] == extra["result"]["metrics"]["fit_s"] > 0
    assert extra["fit_s"] < bench["stats"]["min"]  # the call's wall time includes process start
    for key in ("throughput_img_s", "epoch_train_s", "optimizer_steps", "test_accuracy", "test_correct"):
        assert extra[key] is not None, key
    assert extra["result"]["schema"] == "cifar-bench/result" and "figure" in extra
    (skip,) = data["skipped"]
    assert skip["case"] == "dp" and "2 or more CUDA devices" in skip["reason"]
    names = sorted(p.name for p in (tmp_path / "runs").glob("*.json"))
    assert [n.split("-")[0] for n in names] == ["baseline", "dp"], names
    assert "cifar_bench" in data["machine_info"] and "hz_actual" not in data["machine_info"]["cpu"]
    assert "cifar-bench cases" in proc.stdout and "skipped" in proc.stdout
    assert "baseline: Where the time goes" in proc.stdout  # the per-step breakdown of each case


def test_pytest_benchmark_compare_runs_without_machine_info_warning(tmp_path):
    storage = f"--benchmark-storage=file://{tmp_path / 'storage'}"
    first = _pytest_suite(tmp_path, storage, "--benchmark-autosave")
    assert first.returncode == 0, first.stdout[-3000:]
    # A generous threshold: this checks the plumbing, not this machine's noise.
    second = _pytest_suite(tmp_path, storage, "--benchmark-compare", "--benchmark-compare-fail=mean:300%")
    assert second.returncode == 0, second.stdout[-3000:]
    assert "machine_info is different" not in second.stdout + second.stderr
    assert "0001_" in second.stdout  # the saved run it compared against


def _rows(text: str) -> list[str]:
    """The case rows of a results table (``baseline (1 device)  ok ...``), spaces collapsed."""
    return [" ".join(line.split()) for line in text.splitlines() if line.startswith(("baseline (", "dp (", "ddp ("))]


def test_end_table_table_of_suite_json_and_of_per_run_files_agree_over_rounds(tmp_path):
    out = tmp_path / "suite.json"
    proc = _pytest_suite(tmp_path, f"--benchmark-json={out}", "--bench-rounds", "2")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    end = _rows(proc.stdout.split("cifar-bench cases")[1])
    per_run = sorted(str(p) for p in (tmp_path / "runs").glob("*.json"))
    assert len(per_run) == 3  # two baseline rounds and the skipped dp
    for args in ([str(out)], per_run, per_run + [str(out)]):
        table = run_cli("table", *args)
        assert table.returncode == 0, table.stderr
        assert _rows(table.stdout) == end, (args, table.stdout, end)
    assert end[0].startswith("baseline (1 device) ok 2 ")  # both rounds, each once
    assert end[1].startswith("dp (2 devices) skipped")  # the devices the skipped run was asked for


def test_a_failed_case_is_in_the_end_table_as_not_a_figure(tmp_path):
    out = tmp_path / "suite.json"
    # a learning rate that makes the loss infinite: the run ends with exit 3 (sanity) after writing its result
    proc = _pytest_suite(tmp_path, f"--benchmark-json={out}", "--bench-arg=--lr=1e6", "-k", "test_baseline")
    assert proc.returncode == 3, proc.stdout[-4000:]  # the case's own status (sanity), not pytest's 1
    (row,) = _rows(proc.stdout.split("cifar-bench cases")[1])
    assert row.startswith("baseline (1 device) not a figure") and "sanity check failed" in row
    assert not out.exists() and "not written: the suite failed" in proc.stdout


def test_suite_status_is_the_worst_cases_in_the_projects_table():
    from suite.conftest import suite_status

    assert suite_status(1, [3], 1) == 3  # one case failed its sanity check
    assert suite_status(1, [3, 1], 2) == 1 and suite_status(1, [3, -9], 2) == 1  # failed beats sanity
    assert suite_status(1, [3], 2) == 1  # another test failed without a case status of its own
    assert suite_status(1, [], 1) == 1
    assert suite_status(2, [4], 0) == 4 and suite_status(2, [], 0) == 4  # Ctrl-C: interrupted, not bad input
    assert suite_status(2, [2], 0) == 2  # a case refused its input: the suite stopped with 2
    assert suite_status(2, [3, 2], 0) == 3  # ...after another failed its sanity check: the worst
    assert suite_status(0, [], 0) == 0 and suite_status(4, [], 0) == 4 and suite_status(5, [], 0) == 5


def _suite_training(tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    """Start the suite's baseline case (slowed steps) in its own process group, as a terminal would run
    it (a Ctrl-C reaches the suite and its run); return once the run trains: (suite process, its log)."""
    cmd = [sys.executable, "-m", "pytest", "suite", "-p", "no:cacheprovider", "-q", "-k", "test_baseline",
           "--bench-out", str(tmp_path / "runs"), *FAST[:4], "--bench-arg=--train-samples=6400",
           "--bench-arg=--test-samples=200", f"--benchmark-json={tmp_path / 'runs' / 'suite.json'}"]
    log = tmp_path / "suite.log"
    with open(log, "w") as sink:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=default_sigint,
                                env={**os.environ, "BENCH_TEST_STEP_SLEEP_S": "0.3"})
    deadline = time.monotonic() + 240
    while "training 1 epoch(s)" not in log.read_text():
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.5)
    return proc, log


def _processes_left(tmp_path: Path, grace_s: float = 0.0) -> list[int]:
    """Processes whose command line names ``tmp_path``, after waiting up to ``grace_s`` for them to go."""
    import psutil

    deadline = time.monotonic() + grace_s
    while True:
        left = [p.pid for p in psutil.process_iter(["cmdline"]) if str(tmp_path) in " ".join(p.info["cmdline"] or [])]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(1)


def test_ctrl_c_of_the_suite_lets_the_run_record_it_and_exits_4(tmp_path):
    proc, log = _suite_training(tmp_path)
    time.sleep(2.0)
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=120) == 4, log.read_text()[-3000:]
    (row,) = _rows(log.read_text().split("cifar-bench cases")[1])
    assert row.startswith("baseline (1 device) interrupted") and "SIGINT (Ctrl-C) during the run" in row
    assert "[baseline] cifar-bench: interrupted: SIGINT (Ctrl-C)" in log.read_text()  # the run's own line, relayed
    assert "suite.json not written: the suite was interrupted" in log.read_text()
    assert "KeyboardInterrupt" not in log.read_text() and "Traceback" not in log.read_text()  # no pytest traceback
    assert "suite interrupted (Ctrl-C): what the run recorded is in its line and the table above" in log.read_text()
    assert _processes_left(tmp_path) == []


def test_sigterm_to_the_suites_process_group_takes_ctrl_cs_path(tmp_path):
    # `timeout`, a cancelled CI job or `kill -- -PGID`: pytest died at once, and the run, its pipe gone,
    # left no record (a new user's trial: no result, no table, a stale lock)
    proc, log = _suite_training(tmp_path)
    time.sleep(2.0)
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=120) == 4, log.read_text()[-3000:]
    (row,) = _rows(log.read_text().split("cifar-bench cases")[1])
    assert row.startswith("baseline (1 device) interrupted") and "SIGTERM" in row, row
    (record,) = [json.loads(p.read_text()) for p in (tmp_path / "runs").glob("baseline-*.json")]
    assert record["status"] == "interrupted" and record["reason"].startswith("SIGTERM"), record["reason"]
    assert "suite interrupted (SIGTERM)" in log.read_text() and "Traceback" not in log.read_text()
    assert _processes_left(tmp_path, grace_s=30) == []


def test_a_run_killed_without_a_result_gets_the_suites_record_and_a_row(tmp_path):
    """SIGKILL (as the kernel's OOM killer sends) leaves the run no chance to write its result: the suite
    records what happened, so the end table and the folder still say it, and exits 1 (failed)."""
    import psutil

    proc, log = _suite_training(tmp_path)
    (run,) = [p for p in psutil.Process(proc.pid).children() if "bench" in " ".join(p.cmdline())]
    run.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=120) == 1, log.read_text()[-3000:]
    (row,) = _rows(log.read_text().split("cifar-bench cases")[1])
    assert row.startswith("baseline (1 device) failed") and "killed by SIGKILL" in row, row
    (record,) = [json.loads(p.read_text()) for p in (tmp_path / "runs").glob("baseline-*.json")]
    assert record["status"] == "failed" and "recorded by the suite" in record["reason"]
    assert "suite.json not written: the suite failed" in log.read_text()
    # its loader workers notice the lost parent (torch checks every 5 s) and go: nothing is left behind
    assert _processes_left(tmp_path, grace_s=30) == []


def test_lost_run_reasons():
    from suite.test_cases import lost_run_reason

    assert lost_run_reason(130)[0] == "interrupted" and lost_run_reason(4)[0] == "interrupted"
    assert lost_run_reason(-15) == ("interrupted", "SIGTERM during start-up, before the run wrote a result; "
                                                   "recorded by the suite")  # subprocess's -N: killed by signal N
    assert lost_run_reason(-2)[1].startswith("SIGINT during start-up")
    status, reason = lost_run_reason(-9)
    assert status == "failed" and "killed by SIGKILL (out of memory" in reason
    assert lost_run_reason(-11)[1] == "the run was killed by SIGSEGV before it wrote a result; recorded by the suite"
    assert lost_run_reason(1) == ("failed", "the run exited 1 without writing a result; recorded by the suite")


def test_interleaving_reorders_the_suites_rounds_only(tmp_path):
    """`make test` collects tests/ and suite/ in one session: the rounds' sort must leave tests/ in its
    order, before the suite (CI saw parametrized tests moved behind a suite that then stopped)."""
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                           "tests/test_layout.py", "tests/test_writerlock.py", "suite", "--bench-rounds", "2", "--bench-out", str(tmp_path / "r")],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    ids = [line for line in proc.stdout.splitlines() if "::" in line]
    collected = [i for i in ids if i.startswith("tests/")]  # in file order: test_layout's 8 parametrized first
    assert ids[:len(collected)] == sorted(collected, key=lambda i: not i.startswith("tests/test_layout.py")), proc.stdout
    assert [i.split("::")[1] for i in ids[len(collected):]] == [
        f"test_{case}[round{r}]" for r in (1, 2) for case in ("baseline", "dp", "ddp")]


def test_rounds_must_be_a_whole_number_of_at_least_one(tmp_path):
    # --bench-rounds 0 collected one round silently; BENCH_ROUNDS=x crashed with a traceback.
    from suite.conftest import check_bench_rounds
    assert check_bench_rounds("3") is None and check_bench_rounds("1") is None
    for bad in ("0", "abc", "-2", "1.5", ""):
        assert "whole number >= 1" in check_bench_rounds(bad), bad
    proc = subprocess.run([sys.executable, "-m", "pytest", "suite", "-p", "no:cacheprovider", "-q", "--co",
                           "--bench-out", str(tmp_path / "r")], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "BENCH_ROUNDS": "x"})
    assert proc.returncode == 2 and "'x'" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
