"""One case's child process, seen from the suite: its lines relayed as they come, its failure
reported once, with the run's own error message and exit status.

The child's output is read line by line (stderr merged into stdout) and written to pytest's
terminal at once, prefixed with the case, so ``make bench`` shows which case runs and how far it
is (the run prints one progress line per epoch, bench/measure/progress.py). The run's own one-line error
(``cifar-bench: error: ...``) is held back from the relay and said once, by :func:`stop_on`.

Why the suite's own exceptions inside ``benchmark.pedantic``: pytest's outcomes (fail, skip,
exit) are BaseExceptions, which pytest-benchmark does not notice; it then keeps an empty timing
record, and its table and JSON fail with ``ValueError: min() arg is an empty sequence``. An
``Exception`` marks the benchmark as errored, so pytest-benchmark leaves it out of both; the
test turns it into pytest's outcome afterwards.
"""

from __future__ import annotations

import signal
import subprocess
import threading

import pytest

from bench.core.exitcodes import ExitCode
from suite.conftest import global_rank

ERROR_PREFIX = "cifar-bench: error:"  # how bench.cli reports bad input (one line, exit status 2)


class CaseSkipped(Exception):
    """The run recorded its case as skipped on this hardware; the message is the reason."""


class CaseFailed(Exception):
    """The child exited non-zero: ``case``, ``returncode``, the run's own ``error`` line (or None)."""

    def __init__(self, case: str, returncode: int, error: str | None) -> None:
        super().__init__(case, returncode, error)
        self.case, self.returncode, self.error = case, returncode, error

    def __str__(self) -> str:
        try:
            meaning = ExitCode(self.returncode).name.lower().replace("_", " ")
        except ValueError:  # e.g. -9: killed by a signal
            meaning = f"killed by {signal.Signals(-self.returncode).name}" if self.returncode < 0 else "unknown"
        said = f": {self.error}" if self.error else "; its output is above"
        return f"{self.case}: `cifar-bench run` exit status {self.returncode} ({meaning}){said}"


def relay_run(config: pytest.Config, case: str, command: list[str], env: dict[str, str]) -> None:
    """Run ``command``, writing each output line to the terminal as it comes.

    Raises:
        CaseFailed: the child exited non-zero (its error line is not relayed, see the module doc).
    """
    prefix = f"[{case}] " if global_rank() == 0 else f"[{case} rank {global_rank()}] "
    error = None
    # unbuffered: the child's lines reach the pipe when printed, not when a 8 KiB buffer fills
    with subprocess.Popen(command, env={**env, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, bufsize=1) as proc:
        try:
            for line in proc.stdout:
                line = line.rstrip("\n")
                if line.startswith(ERROR_PREFIX):
                    error = line[len(ERROR_PREFIX):].strip()
                    continue
                show(config, prefix + line)
        except KeyboardInterrupt:
            _let_child_stop(proc)
            for line in _rest_of(proc):  # the run's own last words (its interrupted line)
                show(config, prefix + line)
            raise
    if proc.returncode != 0:
        raise CaseFailed(case, proc.returncode, error)


def _let_child_stop(proc: subprocess.Popen, grace_s: float = 2.0, record_s: float = 60.0) -> None:
    """After Ctrl-C reached the suite: give the run time to write its ``interrupted`` record and exit
    (a terminal's Ctrl-C reaches it too; otherwise it gets a SIGINT of its own after ``grace_s``),
    killing it after ``record_s`` so that no process outlives the suite."""
    for wait_s, then in ((grace_s, proc.send_signal), (record_s, None)):
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            if then is not None:
                then(signal.SIGINT)
    proc.kill()
    proc.wait()


def _rest_of(proc: subprocess.Popen, timeout_s: float = 5.0) -> list[str]:
    """The lines left in the exited child's output pipe, read for at most ``timeout_s`` (a process it
    started could still hold the pipe open)."""
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(line.rstrip("\n") for line in proc.stdout), daemon=True)
    reader.start()
    reader.join(timeout_s)
    return list(lines)


def show(config: pytest.Config, line: str) -> None:
    """Write one line to the terminal while the test runs (pytest captures fd 1 and 2 meanwhile)."""
    capture = config.pluginmanager.get_plugin("capturemanager")
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if capture is None or reporter is None:
        print(line, flush=True)
        return
    with capture.global_and_fixture_disabled():
        if reporter._tw.width_of_current_line:  # after pytest's progress dots: start a line of our own
            reporter._tw.line()
        reporter.write_line(line)
        reporter.flush()


def stop_on(config: pytest.Config, failed: CaseFailed | CaseSkipped) -> None:
    """Turn the child's outcome into pytest's: a skip skips this case; bad input stops the whole
    session with exit status 2 (every case would refuse it the same way), the run's error said once
    as the suite's own line (pytest's "Exit" line after it only says why it stopped); any other
    failure fails this case."""
    if isinstance(failed, CaseSkipped):
        pytest.skip(str(failed))
    if failed.returncode == ExitCode.BAD_INPUT:
        show(config, f"cifar-bench: error: {failed}; nothing was run")
        pytest.exit(f"suite stopped: bad input (exit status {int(ExitCode.BAD_INPUT)}), said above",
                    returncode=int(ExitCode.BAD_INPUT))
    pytest.fail(str(failed), pytrace=False)
