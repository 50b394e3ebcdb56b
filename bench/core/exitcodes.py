"""Exit status of every cifar-bench command and script: one table, used by all of them.

docs/exit-codes.md is the table for users; this module is the one place the numbers live.
``slurm/suite.sh`` (and any other script) uses the same numbers.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit statuses (POSIX: 0 success, 1..125 failure).

    OK          the run finished and its result is valid, or the case was skipped on this
                hardware (the skip and its reason are recorded), or an analysis command succeeded.
    FAILED      a run failed (an exception, a lost or dead rank, a process-group timeout);
                ``compare``: a regression was found.
    BAD_INPUT   bad input: configuration, data set, accelerator, files given to a command,
                command-line usage. Nothing was run and no result is written.
    SANITY      the run finished but failed its sanity check (non-finite loss, accuracy below
                the preset's floor): its times are not a figure.
    INTERRUPTED the run was stopped from outside (SIGTERM/SIGINT, Slurm's time-limit signal,
                ``scancel``) before it finished.
    NO_VALID_RUN ``compare``: a case that should have run has no valid run to judge (failed,
                interrupted, sanity-failed, profiled or test-knob runs only).
    NOTHING_JUDGED ``compare``: no row could be judged: every row is ``not comparable``, ``missing`` or
                ``no baseline`` (e.g. a baseline of another preset); not a pass.
    """

    OK = 0
    FAILED = 1
    BAD_INPUT = 2
    SANITY = 3
    INTERRUPTED = 4
    NO_VALID_RUN = 5
    NOTHING_JUDGED = 6


#: compare's status when it finds a regression (the same number as a failed run, by design:
#: both mean "this is worse than it should be" to a CI script that only tests for non-zero).
REGRESSION = ExitCode.FAILED

# the order in which several runs' statuses make one (docs/exit-codes.md): the worst first
_WORST = (ExitCode.INTERRUPTED, ExitCode.FAILED, ExitCode.SANITY, ExitCode.BAD_INPUT)


def worst(codes: list[int]) -> int:
    """The status of several runs: the worst of theirs, 4 > 1 > 3 > 2 > 0; any other non-zero
    (e.g. -9, killed by a signal) counts as 1. 0 for no codes."""
    codes = [c if c in (0, *_WORST) else ExitCode.FAILED for c in codes]
    return next((int(c) for c in _WORST if c in codes), 0)
