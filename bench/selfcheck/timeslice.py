"""Time-sliced interleaving: benchmark processes that share the machine by turns, so that its drifting
speed hits all of them alike.

    run_sliced({"a": [python, "-m", ...], "b": [...]}, slice_s=1.0, timeout_s=1800)

On a shared VM the speed of the same run moves by 10-30 % from minute to minute (other tenants,
caches, memory bandwidth), so two runs made one after the other compare the machine's moods as much
as the programs. Here the processes run one at a time, round robin, ``slice_s`` seconds each: the
running one is continued (SIGCONT to its process group, so its DataLoader workers run with it), the
others are stopped (SIGSTOP). Each side thus sees the same stretch of the machine's speed within a
few seconds. A stopped process's own clock keeps going: its wall-clock totals (e.g. images/s over an
epoch) take in the others' turns and are no figure; per-step times are, apart from the one step a
turn that spans the stop, which a median ignores (:func:`bench.selfcheck.parity_sides.median_step_s`).

A stopped process cannot notice that its parent died, so a guard process (:class:`_Guard`, in a
session of its own) holds the list of process groups: when this process ends in any way, even by
SIGKILL, the guard's input closes and it kills (and continues) every group still listed.

Used by :mod:`bench.selfcheck.parity`; POSIX only (process groups and job-control signals).
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import tempfile
import time

# The guard: reads "add PGID" / "drop PGID" lines; at the end of its input (this process ended or
# closed it) it kills every group still listed, then continues it so that stopped members die too.
_GUARD = """
import os, signal, sys
groups = set()
for line in sys.stdin:
    verb, pgid = line.split()
    (groups.add if verb == "add" else groups.discard)(int(pgid))
for pgid in groups:
    for sig in (signal.SIGKILL, signal.SIGCONT):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            pass
"""


class _Guard:
    """A process that kills the listed process groups when this one ends (see the module docstring)."""

    def __init__(self) -> None:
        self._proc = subprocess.Popen([sys.executable, "-c", _GUARD], stdin=subprocess.PIPE, text=True,
                                      start_new_session=True)  # (a terminal's Ctrl-C must not end it first)

    def tell(self, verb: str, pgid: int) -> None:
        self._proc.stdin.write(f"{verb} {pgid}\n")
        self._proc.stdin.flush()

    def close(self) -> None:
        self._proc.stdin.close()
        self._proc.wait()


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)  # each process leads its own group (start_new_session)
    except ProcessLookupError:  # the group has already ended
        pass


def _start(args: list[str], env: dict | None, cwd: str | None) -> tuple[subprocess.Popen, list]:
    # output to files: a full pipe would block the process during its own turn and count as its time
    out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
    proc = subprocess.Popen(args, stdout=out, stderr=err, env=env, cwd=cwd, text=True, start_new_session=True)
    return proc, [out, err]


def _finish(proc: subprocess.Popen, files: list) -> subprocess.CompletedProcess:
    texts = []
    for f in files:
        f.seek(0)
        texts.append(f.read())
        f.close()
    return subprocess.CompletedProcess(proc.args, proc.returncode, texts[0], texts[1])


def _end_all(procs: dict[str, tuple[subprocess.Popen, list]], guard: _Guard) -> None:
    """Kill the process groups of the leaders not yet reaped (continued after, so that a stopped member
    dies too), reap them and tell the guard they are gone."""
    running = [proc for proc, _ in procs.values() if proc.returncode is None]
    for proc in running:
        _signal_group(proc, signal.SIGKILL)
        _signal_group(proc, signal.SIGCONT)
    for proc in running:
        proc.wait()
        guard.tell("drop", proc.pid)
    guard.close()


def run_sliced(commands: dict[str, list[str]], slice_s: float, timeout_s: float,
               envs: dict[str, dict | None] | None = None,
               cwds: dict[str, str | None] | None = None) -> dict[str, subprocess.CompletedProcess]:
    """Run ``commands`` (name -> argv) one at a time, round robin, ``slice_s`` seconds a turn, each
    until it exits; return name -> CompletedProcess with its return code and output (text).

    A process is started at its first turn (in dict order), in a session of its own. ``envs`` and
    ``cwds`` give a command's environment and working folder (default: this process's).

    Raises:
        ValueError: ``slice_s`` or ``timeout_s`` is not positive.
        subprocess.TimeoutExpired: a process ran longer than ``timeout_s`` in its own turns (s); all
            the process groups are then killed.
    """
    if slice_s <= 0 or timeout_s <= 0:
        raise ValueError(f"slice_s and timeout_s must be positive (seconds), got {slice_s} and {timeout_s}")
    envs, cwds = envs or {}, cwds or {}
    procs: dict[str, tuple[subprocess.Popen, list]] = {}
    active_s = dict.fromkeys(commands, 0.0)  # each process's own turns so far (s)
    turns = collections.deque(commands)
    done: dict[str, subprocess.CompletedProcess] = {}
    guard = _Guard()
    try:
        while turns:
            name = turns[0]
            if name in procs:
                _signal_group(procs[name][0], signal.SIGCONT)
            else:
                procs[name] = _start(commands[name], envs.get(name), cwds.get(name))
                guard.tell("add", procs[name][0].pid)
            start = time.monotonic()
            try:
                procs[name][0].wait(timeout=min(slice_s, timeout_s - active_s[name]))
            except subprocess.TimeoutExpired:
                active_s[name] += time.monotonic() - start
                if active_s[name] >= timeout_s:
                    raise subprocess.TimeoutExpired(commands[name], timeout_s) from None
                _signal_group(procs[name][0], signal.SIGSTOP)
                turns.rotate(-1)
                continue
            turns.popleft()
            _signal_group(procs[name][0], signal.SIGKILL)  # what it left behind in its group (e.g. workers)
            guard.tell("drop", procs[name][0].pid)
            done[name] = _finish(*procs[name])
    finally:
        _end_all(procs, guard)
    return done
