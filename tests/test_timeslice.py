"""bench.selfcheck.timeslice: processes take turns (never run together), output and status come back, and a
timeout or a finished leader leaves no process behind.

    .venv/bin/python -m pytest tests/test_timeslice.py
"""

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

from bench.selfcheck.timeslice import run_sliced
from tests.results_factory import REPO

# Busy for CPU_S seconds of its own CPU time (a stopped process accrues none), printing the
# monotonic time stamps it saw every ~2 ms as JSON.
BUSY = textwrap.dedent("""
    import json, time
    stamps, last = [], 0.0
    while time.process_time() < {cpu_s}:
        now = time.monotonic()
        if now - last > 0.002:
            stamps.append(now)
            last = now
    print(json.dumps(stamps))
""")


def _segments(stamps_by_name: dict[str, list[float]]) -> list[tuple[str, float, float]]:
    """Maximal runs of one process's stamps in time order: (name, first, last)."""
    events = sorted((t, name) for name, stamps in stamps_by_name.items() for t in stamps)
    segments: list[tuple[str, float, float]] = []
    for t, name in events:
        if segments and segments[-1][0] == name:
            segments[-1] = (name, segments[-1][1], t)
        else:
            segments.append((name, t, t))
    return segments


def test_processes_take_turns_and_never_run_together():
    slice_s, cpu_s = 0.3, 1.0
    commands = {name: [sys.executable, "-c", BUSY.format(cpu_s=cpu_s)] for name in ("a", "b", "c")}
    start = time.monotonic()
    done = run_sliced(commands, slice_s=slice_s, timeout_s=60)
    assert {n: p.returncode for n, p in done.items()} == {"a": 0, "b": 0, "c": 0}
    segments = _segments({n: json.loads(p.stdout) for n, p in done.items()})
    # run together on 2 cores, their stamps would alternate every few ms: thousands of segments
    assert 6 <= len(segments) <= 3 * 3 * cpu_s / slice_s + 6, [(n, round(b - a, 3)) for n, a, b in segments]
    assert all(last - first <= slice_s + 0.15 for _, first, last in segments)  # no turn longer than a slice
    assert [n for n, _, _ in segments[:3]] == ["a", "b", "c"]  # round robin, in the commands' order
    assert time.monotonic() - start < 3 * cpu_s + 10  # (loose: the turns add up, nothing waits idle)


def test_output_and_exit_status_come_back():
    done = run_sliced({"ok": [sys.executable, "-c", "print('out')"],
                       "bad": [sys.executable, "-c", "import sys; print('err', file=sys.stderr); sys.exit(3)"]},
                      slice_s=0.2, timeout_s=60)
    assert (done["ok"].returncode, done["ok"].stdout) == (0, "out\n")
    assert (done["bad"].returncode, done["bad"].stderr) == (3, "err\n")


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _wait_gone(pids: list[int], within_s: float = 5.0) -> bool:
    deadline = time.monotonic() + within_s
    while not all(_gone(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return all(_gone(p) for p in pids)


# writes its own pid and a child's (same process group) to PIDS, then does LAST
FAMILY = textwrap.dedent("""
    import os, subprocess, sys, time
    child = subprocess.Popen(["sleep", "60"])
    with open({pids!r}, "w") as f:
        f.write(f"{{os.getpid()}} {{child.pid}}")
    {last}
""")


def test_a_timeout_kills_every_process_group(tmp_path):
    pids = tmp_path / "pids"
    commands = {"slow": [sys.executable, "-c", FAMILY.format(pids=str(pids), last="time.sleep(60)")],
                "other": [sys.executable, "-c", "import time; time.sleep(60)"]}
    start = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        run_sliced(commands, slice_s=0.3, timeout_s=1.0)
    assert time.monotonic() - start < 15  # ~2 s of the slow one's turns, ~1 s of the other's
    assert _wait_gone([int(p) for p in pids.read_text().split()])  # also the stopped one's child


def test_what_a_finished_process_left_in_its_group_is_killed(tmp_path):
    pids = tmp_path / "pids"
    done = run_sliced({"leaver": [sys.executable, "-c", FAMILY.format(pids=str(pids), last="sys.exit(0)")]},
                      slice_s=0.5, timeout_s=60)
    assert done["leaver"].returncode == 0
    assert _wait_gone([int(pids.read_text().split()[1])])  # its `sleep 60` did not outlive it


def test_a_killed_runner_leaves_no_process_behind(tmp_path):
    """SIGKILL of the process that runs the turns (nothing of it runs after): its guard kills the groups,
    the stopped one too."""
    a, b = tmp_path / "a", tmp_path / "b"
    family = {n: [sys.executable, "-c", FAMILY.format(pids=str(p), last="time.sleep(60)")] for n, p in (("a", a), ("b", b))}
    runner = subprocess.Popen([sys.executable, "-c", "import sys; from bench.selfcheck.timeslice import run_sliced; "
                               f"run_sliced({family!r}, slice_s=0.3, timeout_s=60)"], cwd=REPO)
    deadline = time.monotonic() + 30
    while not (a.exists() and b.exists() and b.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.1)  # b has its turn, a is stopped
    runner.kill()
    runner.wait()
    pids = [int(p) for f in (a, b) for p in f.read_text().split()]
    assert len(pids) == 4 and _wait_gone(pids)


def test_bad_slices_are_refused():
    with pytest.raises(ValueError, match="positive"):
        run_sliced({"a": ["true"]}, slice_s=0, timeout_s=10)
