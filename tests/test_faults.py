"""Fault injection on CPU: dead ranks, a busy port, a rank that never joins, SIGTERM, a full disk,
a tiny /dev/shm and CPU binding. Each run is bounded in time (subprocess timeouts, bounded waits)
and each test checks the exit status, the result JSON and that no process of the run is left
(every process whose command line holds the test's own --out folder).

Run: .venv/bin/python -m pytest -q tests/test_faults.py
The tmpfs tests need root (a mount namespace of their own: ``unshare -m``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from bench.core.config import ConfigError, make_config
from bench.data.datamodule import check_shared_memory
from bench.results.resultfile import load_result, write_json_atomic
from bench.run import faults
from bench.run.threads import cores_per_rank
from tests.conftest import REPO

SMALL = ("--data", "synthetic", "--preset", "smoke", "--train-samples", "640", "--test-samples", "200")
LONG = ("--data", "synthetic", "--preset", "smoke", "--train-samples", "3200", "--test-samples", "200")
RUN_TIMEOUT_S = 240  # bound on every run of these tests (s); a busy 2-core machine starts DDP in ~20-40 s
NEEDS_ROOT = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"),
                                reason="mounting a private tmpfs needs root and unshare")


def _env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLURM_", "BENCH_RUN_ID", "OMP_NUM_THREADS", faults.LAUNCHER_ENV))}
    return {**env, "PYTHONPATH": str(REPO), **extra}


def _start(out: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    log = open(out.parent / f"{out.name}.log", "w")
    return subprocess.Popen([sys.executable, "-m", "bench", "run", "--out", str(out), *args], cwd=REPO,
                            env=env or _env(), stdout=log, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=default_sigint)


def default_sigint() -> None:
    """In a child before exec: SIGINT back to its default. A test session started in the background of a
    non-interactive shell (`nohup ... &`) inherits SIGINT ignored, and an ignored signal stays ignored
    across exec, so Python would never raise KeyboardInterrupt and the Ctrl-C tests would test nothing."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _log(out: Path) -> str:
    path = out.parent / f"{out.name}.log"
    return path.read_text() if path.exists() else ""


def _procs(marker: Path) -> list[psutil.Process]:
    """Live processes whose command line contains ``marker`` (the test's own --out folder)."""
    found = []
    for p in psutil.process_iter(["cmdline", "status"]):
        try:
            if p.info["status"] != psutil.STATUS_ZOMBIE and str(marker) in " ".join(p.info["cmdline"] or []):
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return found


def _assert_nothing_left(marker: Path, within_s: float = 15.0) -> None:
    deadline = time.monotonic() + within_s
    while (left := _procs(marker)) and time.monotonic() < deadline:
        time.sleep(0.2)
    for p in left:  # clean up before failing, so one failure does not leak into the next test
        p.kill()
    assert not left, f"processes left behind: {[(p.pid, p.cmdline()) for p in left]}"


def _wait_training(proc: subprocess.Popen, out: Path, ranks: int) -> psutil.Process:
    """Wait (bounded) until all ranks registered in the process group; return rank 0 as psutil.Process."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while "All distributed processes registered" not in _log(out) or len(_procs(out)) < ranks:
        assert proc.poll() is None, _log(out)[-3000:]
        assert time.monotonic() < deadline, "the ranks never registered"
        time.sleep(0.2)
    time.sleep(2.0)  # into the training steps
    return psutil.Process(proc.pid)


def _child(rank0: psutil.Process, local_rank: int) -> psutil.Process:
    for child in rank0.children():
        if child.environ().get("LOCAL_RANK") == str(local_rank):
            return child
    raise AssertionError(f"no child rank {local_rank} of pid {rank0.pid}")


def _only_result(out: Path) -> dict:
    files = sorted(out.glob("*.json"))
    assert len(files) == 1, (files, _log(out)[-3000:])
    return load_result(files[0])


def _finish(proc: subprocess.Popen, what: str, t0: float) -> float:
    proc.wait(timeout=RUN_TIMEOUT_S)
    took = time.monotonic() - t0
    print(f"fault-to-exit: {what}: {took:.1f} s")
    return took


SLOW_STEPS = _env(BENCH_TEST_STEP_SLEEP_S="0.2")  # ~10 s of training: time to inject the fault


def test_rank1_killed_rank0_records_it_and_nothing_is_left(tmp_path):
    out = tmp_path / "out"
    proc = _start(out, "--case", "ddp", "--devices", "2", *LONG, env=SLOW_STEPS)
    rank0 = _wait_training(proc, out, 2)
    t0 = time.monotonic()
    _child(rank0, 1).kill()
    _finish(proc, "rank 1 SIGKILL", t0)
    assert proc.returncode == 1, _log(out)[-3000:]
    r = _only_result(out)
    assert r["status"] == "failed" and "rank 1" in r["reason"] and "SIGKILL" in r["reason"], r["reason"]
    assert socket.gethostname() in r["reason"]
    # the cause first, rank 0's symptom cut to its first paragraph (gloo appends a 50-line C++ stack)
    assert r["reason"].startswith("lost rank 1 (pid ") and "\nAt:" not in r["reason"], r["reason"]
    # one line and the record's path on the console, not rank 0's traceback of a symptom
    log = _log(out)
    assert f"cifar-bench: failed: {r['reason']}" in log and f"result: {next(out.glob('*.json'))}" in log, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
    _assert_nothing_left(out)


def test_a_killed_loader_worker_of_rank1_is_named_not_a_lost_peer(tmp_path):
    out = tmp_path / "out"
    proc = _start(out, "--case", "ddp", "--devices", "2", "--num-workers", "1", *LONG, env=SLOW_STEPS)
    rank0 = _wait_training(proc, out, 2)
    deadline = time.monotonic() + 30
    while not (workers := _child(rank0, 1).children()):  # its loader worker starts with the first epoch
        assert time.monotonic() < deadline, "rank 1 started no loader worker"
        time.sleep(0.2)
    t0 = time.monotonic()
    workers[0].kill()
    _finish(proc, "rank 1's loader worker SIGKILL", t0)
    assert proc.returncode == 1, _log(out)[-3000:]
    r = _only_result(out)
    assert r["status"] == "failed" and r["reason"].startswith("rank 1 (host ") and "DataLoader worker" in r["reason"], r
    _assert_nothing_left(out)


def test_rank0_killed_a_surviving_rank_records_it(tmp_path):
    out = tmp_path / "out"
    proc = _start(out, "--case", "ddp", "--devices", "2", *LONG, env=SLOW_STEPS)
    rank0 = _wait_training(proc, out, 2)
    child = _child(rank0, 1)
    t0 = time.monotonic()
    rank0.kill()
    proc.wait(timeout=30)
    child.wait(timeout=60)  # the child notices its parent is gone within a poll (0.5 s)
    print(f"fault-to-exit: rank 0 SIGKILL, rank 1 gone after {time.monotonic() - t0:.1f} s")
    r = _only_result(out)
    assert r["status"] == "failed" and "rank 0" in r["reason"] and "died" in r["reason"], r["reason"]
    assert r["reason"].startswith("rank 0 (pid "), r["reason"]  # the cause first
    # the survivor (rank 1, whose output still reaches the log) says it in one line with the record's path
    log = _log(out)
    assert f"cifar-bench: failed: {r['reason']}" in log and f"result: {next(out.glob('*.json'))}" in log, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
    _assert_nothing_left(out)


def test_busy_master_port_fails_clearly_and_leaves_no_rank(tmp_path):
    out = tmp_path / "out"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        t0 = time.monotonic()
        proc = _start(out, "--case", "ddp", "--devices", "2", *SMALL, env=_env(MASTER_PORT=str(port)))
        _finish(proc, "busy MASTER_PORT (from start)", t0)
        assert proc.returncode == 1, _log(out)[-3000:]
        r = _only_result(out)
        assert r["status"] == "failed" and ("EADDRINUSE" in r["reason"] or "address already in use" in r["reason"])
        _assert_nothing_left(out)


SLURM_WITHOUT_SRUN = dict(SLURM_JOB_ID="1", SLURM_JOB_NAME="job", SLURM_NTASKS="2", SLURM_NTASKS_PER_NODE="2",
                          SLURM_NNODES="1", SLURM_NODELIST="localhost", SLURM_PROCID="0", SLURM_LOCALID="0",
                          SLURM_NODEID="0")


def test_slurm_tasks_without_srun_are_refused_before_launch(tmp_path):
    out = tmp_path / "out"
    t0 = time.monotonic()
    proc = _start(out, "--case", "ddp", "--devices", "2", *SMALL, env=_env(**SLURM_WITHOUT_SRUN))
    _finish(proc, "Slurm variables without srun (from start)", t0)
    log = _log(out)
    assert proc.returncode == 2, log[-3000:]
    assert "srun" in log and "SLURM_STEP_ID" in log and "SLURM_NTASKS=2" in log
    assert not list(out.glob("*.json"))  # bad input: nothing written
    _assert_nothing_left(out)


def test_ddp_over_nodes_that_no_launcher_started_is_refused_at_once(tmp_path):
    out = tmp_path / "out"
    env = {k: v for k, v in _env().items() if k not in faults.NODE_LAUNCHER_VARS}
    t0 = time.monotonic()
    proc = _start(out, "--case", "ddp", "--devices", "1", "--num-nodes", "2", *SMALL, env=env)
    _finish(proc, "ddp --num-nodes 2 without srun (from start)", t0)
    log = _log(out)
    assert proc.returncode == 2, log[-3000:]  # not a wait of --pg-timeout-s (300 s) for nodes nobody started
    assert "--num-nodes 2: no launcher started this process" in log and "srun -N2 --ntasks-per-node=1" in log
    assert "Traceback" not in log and not out.exists()  # bad input: nothing written, not even --out
    _assert_nothing_left(out)
    repeated = _start(out, "--case", "ddp", "--devices", "1", "--num-nodes", "2", "--repeats", "2", *SMALL, env=env)
    _finish(repeated, "the same with --repeats 2", time.monotonic())
    assert repeated.returncode == 2 and _log(out).count("no launcher started this process") == 1  # said once


def test_a_rank_that_never_joins_ends_the_run_at_the_timeout(tmp_path):
    out = tmp_path / "out"
    # srun's variables for 2 tasks, but only task 0 exists: rank 0 waits for rank 1 at the rendezvous
    env = _env(**SLURM_WITHOUT_SRUN, SLURM_STEP_ID="0", SLURM_STEPID="0", MASTER_PORT=str(_free_port()))
    t0 = time.monotonic()
    proc = _start(out, "--case", "ddp", "--devices", "2", *SMALL, "--pg-timeout-s", "10", env=env)
    _finish(proc, "rank 1 never joins, --pg-timeout-s 10 (from start)", t0)
    assert proc.returncode == 1, _log(out)[-3000:]
    r = _only_result(out)
    assert r["status"] == "failed" and r["config"]["pg_timeout_s"] == 10
    assert "did not join or answer within --pg-timeout-s 10 s" in r["reason"], r["reason"]
    assert "Traceback" not in _log(out)  # a known cause, named: torch's rendezvous traceback adds nothing
    _assert_nothing_left(out)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_interrupts_every_rank_with_status_4_and_is_named(tmp_path, sig):
    out = tmp_path / "out"
    proc = _start(out, "--case", "ddp", "--devices", "2", *LONG, env=SLOW_STEPS)
    rank0 = _wait_training(proc, out, 2)
    t0 = time.monotonic()
    rank0.send_signal(sig)
    _finish(proc, f"{sig.name} to rank 0", t0)
    assert proc.returncode == 4, _log(out)[-3000:]
    r = _only_result(out)
    assert r["status"] == "interrupted" and r["reason"].startswith(f"{sig.name} ("), r
    _assert_nothing_left(out)


def _in_private_tmpfs(mount: Path, size: str, script: str, timeout: float = RUN_TIMEOUT_S):
    """Run ``script`` (sh) with a tmpfs of ``size`` mounted on ``mount`` in a mount namespace of its own."""
    mount.mkdir(parents=True, exist_ok=True)
    cmd = f"mount -t tmpfs -o size={size} tmpfs {mount} && {script}"
    return subprocess.run(["unshare", "-m", "sh", "-c", cmd], cwd=REPO, env=_env(), capture_output=True, text=True,
                          timeout=timeout)


@NEEDS_ROOT
def test_full_results_disk_is_a_clear_error_and_leaves_no_file(tmp_path):
    out = tmp_path / "full"
    t0 = time.monotonic()
    proc = _in_private_tmpfs(out, "200k", f"{sys.executable} -m bench run --case baseline {' '.join(SMALL)} "
                                          f"--out {out}; rc=$?; echo left:; ls -A {out}; exit $rc")
    print(f"fault-to-exit: results folder full (from start): {time.monotonic() - t0:.1f} s")
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert f"the device of {out} is full" in proc.stderr and "--out" in proc.stderr
    assert proc.stdout.split("left:", 1)[1].strip() == ""  # no JSON, no TensorBoard file, no temp file


@NEEDS_ROOT
def test_disk_filling_during_a_write_names_the_folder_and_leaves_nothing(tmp_path):
    folder = tmp_path / "small"
    code = ("from bench.core.files import atomic_write_bytes, DiskFullError\n"
            f"try: atomic_write_bytes('{folder}/cache.pt', bytes(400_000))\n"
            "except DiskFullError as err: print('ERR', err.strerror)\n")
    proc = _in_private_tmpfs(folder, "200k", f"{sys.executable} -c \"{code}\"; echo left:; ls -A {folder}")
    assert f"ERR no space left on the device of {folder}" in proc.stdout, proc.stdout + proc.stderr
    assert proc.stdout.split("left:", 1)[1].strip() == ""


@NEEDS_ROOT
def test_tiny_dev_shm_is_refused_early_with_the_fixes(tmp_path):
    out = tmp_path / "out"
    t0 = time.monotonic()
    proc = _in_private_tmpfs(Path("/dev/shm"), "1m", f"{sys.executable} -m bench run --case baseline {' '.join(SMALL)} "
                                                      f"--num-workers 2 --out {out}")
    print(f"fault-to-exit: 1 MiB /dev/shm, 2 workers (from start): {time.monotonic() - t0:.1f} s")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "/dev/shm" in proc.stderr and "--shm-size" in proc.stderr and "--num-workers 0" in proc.stderr
    assert not list(out.glob("*.json"))
    _assert_nothing_left(out)


def test_thread_plan_is_what_the_ranks_ran_also_under_taskset(tmp_path):
    out = tmp_path / "out"
    # one DDP process on 2 cores: the plan is 1 worker + 1 thread; Lightning's launcher alone would set 2 threads
    proc = subprocess.run([sys.executable, "-m", "bench", "run", "--case", "ddp", "--devices", "1", *SMALL,
                           "--out", str(out)], cwd=REPO, env=_env(), capture_output=True, text=True,
                          timeout=RUN_TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr[-3000:]
    w = _only_result(out)["world"]
    plan = w["thread_plan"]
    assert w["torch_threads_per_rank"] == plan["torch_threads"] == max(1, plan["cores_per_rank"] - plan["loader_workers"])
    assert w["loader_workers_per_rank"] == plan["loader_workers"]
    assert "processes started by this process alone" in w["cluster_environment"]
    # CPU binding: the ranks inherit the one core, each gets 1 thread and no worker (not the user's 2 threads)
    bound = tmp_path / "bound"
    proc = subprocess.run(["taskset", "-c", "0", sys.executable, "-m", "bench", "run", "--case", "ddp", "--devices",
                           "2", *SMALL, "--out", str(bound)], cwd=REPO, env=_env(OMP_NUM_THREADS="2"),
                          capture_output=True, text=True, timeout=RUN_TIMEOUT_S)  # a user's OMP_NUM_THREADS too
    assert proc.returncode == 0, proc.stderr[-3000:]
    w = _only_result(bound)["world"]
    assert [r["cpu_affinity"] for r in w["read_back_per_rank"]] == [1, 1]
    assert [(r["torch_threads"], r["loader_workers"]) for r in w["read_back_per_rank"]] == [(1, 0), (1, 0)]
    assert [r["omp_num_threads_env"] for r in w["read_back_per_rank"]] == ["2", "2"]
    assert "Lightning's launcher in rank 0" in w["cluster_environment"]
    _assert_nothing_left(out)
    _assert_nothing_left(bound)


# --- unit tests: no process started --------------------------------------------------------------

def test_srun_check_reads_what_srun_sets():
    config = make_config("smoke", case="ddp", devices=2, data="synthetic")
    with pytest.raises(ConfigError, match="not started by srun.*SLURM_STEP_ID"):
        faults.check_srun(config, SLURM_WITHOUT_SRUN)
    faults.check_srun(config, {**SLURM_WITHOUT_SRUN, "SLURM_STEP_ID": "0"})  # a task of an srun step
    faults.check_srun(config, {**SLURM_WITHOUT_SRUN, "SLURM_NTASKS": "1"})  # sbatch -n1: one process is fine
    faults.check_srun(config, {})


def test_ddp_over_nodes_needs_a_launcher():
    config = make_config("smoke", case="ddp", devices=2, num_nodes=2, data="synthetic")
    with pytest.raises(ConfigError, match="--num-nodes 2: no launcher started this process"):
        faults.check_srun(config, {})
    for launched in ({"SLURM_STEP_ID": "0"}, {"NODE_RANK": "1"}, {"RANK": "0", "GROUP_RANK": "0"}):
        faults.check_srun(config, launched)  # srun, Lightning's NODE_RANK, torchrun
    with pytest.raises(ConfigError, match="NODE_RANK \\(0..1\\), MASTER_ADDR and MASTER_PORT"):
        faults.check_srun(config, {"NODE_RANK": ""})  # set but empty: Lightning would fail on int('')
    faults.check_srun(make_config("smoke", case="ddp", devices=2, data="synthetic"), {})  # one node: Lightning starts it


def test_cores_are_not_divided_twice_when_slurm_binds_cpus(monkeypatch):
    config = make_config("smoke", case="ddp", devices=2, data="synthetic")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    assert cores_per_rank(config, {}) == 2  # Lightning's launcher: 4 cores shared by 2 ranks
    bound = {"SLURM_STEP_ID": "0", "SLURM_CPUS_PER_TASK": "4"}  # srun binding: the task's own 4 cores
    assert cores_per_rank(config, bound) == 4
    assert cores_per_rank(config, {**bound, "SLURM_CPUS_PER_TASK": "2"}) == 2  # no binding: the node's cores


def test_first_writer_wins(tmp_path):
    path = tmp_path / "r.json"
    write_json_atomic({"who": "first"}, path, exclusive=True)
    with pytest.raises(FileExistsError):
        write_json_atomic({"who": "second"}, path, exclusive=True)
    assert json.loads(path.read_text()) == {"who": "first"} and [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_shared_memory_check_counts_the_batches_in_flight(monkeypatch, tmp_path):
    config = make_config("smoke", data="synthetic")  # test batches of 500 uint8 images: 1.5 MB each
    fake = type("S", (), {"f_bavail": 4 * 2**20 // 4096, "f_frsize": 4096})
    monkeypatch.setattr(os, "statvfs", lambda path: fake)
    check_shared_memory(config, 0, tmp_path)  # no workers: nothing in shared memory
    with pytest.raises(ConfigError, match="MiB free but 2 loader worker"):
        check_shared_memory(config, 2, tmp_path)  # 2 workers x 2 batches x 1.5 MB > 4 MiB
    check_shared_memory(config, 1, tmp_path)


def test_the_script_record_never_replaces_the_runs_own(tmp_path):
    """slurm/suite.sh writes a case's record only where no rank could: first writer wins."""
    out = tmp_path / "out"
    env = _env(BENCH_RUN_ID="ddp-job7.suite")
    mark = [sys.executable, "-m", "bench", "mark-interrupted", "--case", "ddp", "--preset", "smoke", "--data", "synthetic",
            "--out", str(out)]
    first = subprocess.run([*mark, "--status", "failed", "--reason", "srun step exited 137"], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    second = subprocess.run([*mark, "--reason", "stopped by the Slurm time limit"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    r = _only_result(out)
    assert (r["status"], r["reason"]) == ("failed", "srun step exited 137") and "exists already" in second.stdout


def test_interruption_names_the_signal_lightning_turned_into_an_exception():
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from bench.run.faults import interruption

    assert interruption(SIGTERMException()).startswith("SIGTERM (")
    assert interruption(KeyboardInterrupt()) == "SIGINT (Ctrl-C)"
    try:  # what Lightning does on Ctrl-C: sys.exit(1) inside its `except KeyboardInterrupt`
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise SystemExit(1)
    except SystemExit as err:
        assert interruption(err) == "SIGINT (Ctrl-C)"
    assert interruption(SystemExit(3)) == "SystemExit (exit status 3)"


def test_error_text_keeps_the_first_paragraph_and_a_bounded_length():
    from bench.run.faults import error_text

    gloo = RuntimeError("[pair.cc:561] Connection closed by peer [127.0.0.1]:6070. GLHF!\n\nAt:\n  a.py(1): f\n  b.py(2): g")
    assert error_text(gloo) == "RuntimeError: [pair.cc:561] Connection closed by peer [127.0.0.1]:6070. GLHF!"
    assert error_text(ValueError("x" * 500), limit=20) == "ValueError: " + "x" * 17 + "..."
    assert error_text(KeyError()) == "KeyError"
