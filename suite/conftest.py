"""pytest-benchmark plumbing for the benchmark cases (see README, "The suite").

Run:  pytest suite --bench-preset smoke --bench-data PATH --benchmark-json out.json

Design: each case runs ``python -m bench run`` in a child process, and the test reads that
run's result JSON. So Lightning's DDP launcher re-executes ``python -m bench run``, never pytest;
every round starts from a clean process; and under ``srun`` each task's pytest starts one child
that inherits the task's SLURM_* variables and becomes one rank (SLURMEnvironment). Only global
rank 0 (SLURM_PROCID 0, or no Slurm) writes JSON: the run's result and the --benchmark-json.

pytest-benchmark's own statistics time the whole child call (process start, data load, fit,
test); the figure to compare is the run's ``fit_s``, put in ``extra_info`` with the rest of the
run's metrics and the full result under ``extra_info["result"]``.
"""

from __future__ import annotations

import os
import signal
import sys
import warnings
from pathlib import Path

import pytest

from bench.measure import environment
from bench.results.resultfile import format_table

ORDER = pytest.StashKey[list]()  # "case round r" of each round run, in the order they ran (rank 0)
WRITER_LOCK = pytest.StashKey[object]()
CREATED = pytest.StashKey[list]()  # the folders of --bench-out this session created (for its lock)  # the --bench-out writer lock this session holds (or None)
RESULTS = pytest.StashKey[list]()  # result dicts of every round run in this session, any status (rank 0)
CASE_STATUSES = pytest.StashKey[list]()  # exit statuses of the cases' runs that did not end 0
# pytest-benchmark's group name, the title of its table: its figures are not the cases' fit_s
WALL_TIME_GROUP = "wall time of each whole `cifar-bench run` call, start to exit (compare the cases' fit_s, not these)"
_SKIP_LOG: list[dict] = []  # skipped cases: {"test", "case", "reason"}


def global_rank() -> int:
    """This process's global rank under srun (SLURM_PROCID), 0 elsewhere."""
    return int(os.environ.get("SLURM_PROCID", "0")) if "SLURM_STEP_ID" in os.environ else 0


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("cifar-bench")
    g.addoption("--bench-preset", default=os.environ.get("BENCH_PRESET", "smoke"), help="smoke, cpu or full")
    g.addoption("--bench-data", default=os.environ.get("BENCH_DATA"), help="data set path or 'synthetic'")
    g.addoption("--bench-out", default=os.environ.get("BENCH_OUT", "runs/suite"), help="folder for result JSON")
    # A string here, checked in pytest_configure: 0 ran one round silently and BENCH_ROUNDS=x crashed.
    g.addoption("--bench-rounds", default=os.environ.get("BENCH_ROUNDS", "1"),
                help="repeats of each case (fit_s samples), a whole number >= 1")
    g.addoption("--bench-devices", type=int, default=None,
                help="ddp devices per node (default: SLURM_NTASKS_PER_NODE, visible GPUs, or 2 CPU processes)")
    g.addoption("--bench-nodes", type=int, default=None, help="ddp nodes (default: SLURM_NNODES or 1)")
    g.addoption("--bench-arg", action="append", default=[], help="extra `cifar-bench run` argument (repeatable)")


# `cifar-bench run` options the suite sets itself per case (each has its own --bench-* option, or is the case)
SUITE_OWNED = ("--case", "--out", "--preset", "--data", "--devices", "--num-nodes", "--repeats")


def check_bench_args(args: list[str]) -> str | None:
    """Why these --bench-arg values cannot be passed on (pure; None when they can): an option the suite
    sets per case would run another case or write elsewhere than the suite reads back."""
    owned = sorted({a.split("=", 1)[0] for a in args if a.split("=", 1)[0] in SUITE_OWNED})
    if owned:
        return (f"--bench-arg (BENCH_ARGS) cannot set {', '.join(owned)}: the suite sets it per case; use "
                "--bench-preset/--bench-data/--bench-out/--bench-rounds/--bench-devices/--bench-nodes "
                "(make bench: PRESET=, BENCH_DATA=, RUNS=, ROUNDS=)")
    return None


def check_bench_out(out: str) -> str | None:
    """Why --bench-out cannot be used (pure; None when it can): empty, which would be the current folder."""
    if not str(out).strip():
        return "--bench-out (make bench: RUNS) is empty: name the results folder, e.g. --bench-out runs/mine"
    return None


def check_bench_rounds(rounds: str) -> str | None:
    """Why --bench-rounds cannot be used (pure; None when it can): not a whole number >= 1."""
    if not str(rounds).strip().isdigit() or int(rounds) < 1:
        return (f"--bench-rounds (make bench: ROUNDS, BENCH_ROUNDS) is {rounds!r}: give the repeats of each "
                "case as a whole number >= 1, e.g. ROUNDS=3")
    return None


STOPPED_BY: list[str] = []  # the signal that stopped the suite ("SIGTERM"), for its last line


def _sigterm_as_ctrl_c() -> None:
    """SIGTERM (`timeout`, a CI job cancelled, `kill -- -PGID`) takes Ctrl-C's path: the running case
    records ``interrupted``, the finished ones keep their rows and history, exit 4. Without it pytest died
    at once, the run lost its pipe before writing its record, and nothing of the session was kept (a new
    user's trial). Not inside a Slurm step: there slurm/suite.sh owns the job's SIGTERM (KillWait)."""
    if "SLURM_STEP_ID" in os.environ:
        return

    def stop(signum, frame):
        STOPPED_BY.append("SIGTERM")
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)


def pytest_configure(config: pytest.Config) -> None:
    if problem := (check_bench_out(config.getoption("--bench-out")) or check_bench_args(config.getoption("--bench-arg"))
                   or check_bench_rounds(config.getoption("--bench-rounds"))):
        from bench.core.exitcodes import ExitCode

        sys.stderr.write(f"cifar-bench: error: suite: exit status {int(ExitCode.BAD_INPUT)} (bad input): {problem}; "
                         "nothing was run\n")
        pytest.exit(f"suite stopped: bad input (exit status {int(ExitCode.BAD_INPUT)}), said above",
                    returncode=int(ExitCode.BAD_INPUT))
    config.option.bench_rounds = int(config.getoption("--bench-rounds"))
    _sigterm_as_ctrl_c()
    config.stash[RESULTS] = []
    config.stash[CASE_STATUSES] = []
    config.stash[ORDER] = []
    _take_out_folder(config)
    if global_rank() != 0 and hasattr(config.option, "benchmark_json"):
        config.option.benchmark_json = None  # only global rank 0 writes the suite's JSON
        config.option.benchmark_autosave = False
        config.option.benchmark_save = None
        # ...and only its call is timed and shown: a job's output had one table per rank otherwise
        config.option.benchmark_disable = True
        # ...and only its pytest summary ("1 passed, 2 deselected in ..."): a job's output had one per rank.
        # Its relayed run lines ([case rank R] ...) and failures stay.
        config.option.verbose = min(config.option.verbose, -2)
    # A session whose only case was skipped (the dp step on a node without 2 GPUs) has nothing to
    # save; pytest-benchmark warns about it although the skip and its reason are reported.
    warnings.filterwarnings("ignore", message="Not saving anything, no benchmarks have been run")


def _take_out_folder(config: pytest.Config) -> None:
    """Hold --bench-out's writer lock for the session (global rank 0; bench.results.writerlock): a second
    suite or run into the folder is refused at once, exit 2. The cases' runs inherit it."""
    from bench.core.exitcodes import ExitCode
    from bench.results.writerlock import FolderBusy, FolderUnwritable, acquire

    if global_rank() != 0:
        return
    out = Path(config.getoption("--bench-out"))
    config.stash[CREATED] = [p for p in (out, *out.parents) if not p.exists()]  # deepest first
    try:
        config.stash[WRITER_LOCK] = acquire(config.getoption("--bench-out"),
                                            "pytest suite (make bench) " + " ".join(config.invocation_params.args))
    except FolderBusy as busy:
        sys.stderr.write(f"cifar-bench: error: suite: exit status {int(ExitCode.BAD_INPUT)} (bad input): {busy}; "
                         "nothing was run\n")
        pytest.exit(f"suite stopped: bad input (exit status {int(ExitCode.BAD_INPUT)}), said above",
                    returncode=int(ExitCode.BAD_INPUT))
    except FolderUnwritable:
        pass  # the first case's run refuses the folder in its own words (exit 2), which stops the suite


def pytest_unconfigure(config: pytest.Config) -> None:
    if global_rank() == 0:  # every run of make bench, the suite and slurm/suite.sh joins the history (docs/history.md)
        from bench.history.store import add_automatically
        add_automatically(config.stash.get(RESULTS, []), f"suite --bench-out {config.getoption('--bench-out')}")
    if (lock := config.stash.get(WRITER_LOCK, None)) is not None:
        lock.release()
        for folder in config.stash.get(CREATED, []):  # a session that wrote nothing leaves no new folder
            try:
                folder.rmdir()
            except OSError:
                break


@pytest.fixture
def bench_round(request: pytest.FixtureRequest) -> int:
    """This case's round, 1-based (1 without --bench-rounds > 1)."""
    return getattr(request, "param", 1)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """--bench-rounds N > 1: each case becomes N tests, ``test_ddp[round2]``, run in the order of
    :func:`pytest_collection_modifyitems` (round 1 of every case, then round 2, ...)."""
    rounds = metafunc.config.getoption("--bench-rounds")
    if "bench_round" in metafunc.fixturenames and rounds > 1:
        metafunc.parametrize("bench_round", range(1, rounds + 1), indirect=True, ids=lambda r: f"round{r}")


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list) -> None:
    """Interleave the rounds: all cases' round 1, then all cases' round 2, ... (a stable sort, so the
    cases keep their order within a round): drift of the machine over the session then spreads over
    every case instead of landing on one, and the speedups do not absorb it."""
    def round_of(item) -> int:
        spec = getattr(item, "callspec", None)
        # tests/ run in the same session by `make test` keep their order, first (a parametrized test of
        # theirs has a callspec too, without bench_round: CI saw 210 of them moved behind the suite)
        return spec.params["bench_round"] if spec is not None and "bench_round" in spec.params else 0

    items[:] = sorted(items, key=round_of)


def case_of(nodeid: str) -> str:
    """The case a suite test id names: ``suite/test_cases.py::test_ddp[round2]`` -> ``ddp``."""
    return nodeid.rsplit("test_", 1)[-1].split("[", 1)[0]


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Remember skipped benchmark cases with their reason, once a case (they never reach --benchmark-json)."""
    if report.skipped and report.when in ("setup", "call") and "suite/" in report.nodeid.replace("\\", "/"):
        if any(s["case"] == case_of(report.nodeid) for s in _SKIP_LOG):
            return  # the same case skipped again in a later round
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _SKIP_LOG.append({"test": report.nodeid, "case": case_of(report.nodeid),
                          "reason": reason.removeprefix("Skipped: ")})


def pytest_benchmark_update_json(config: pytest.Config, benchmarks: list, output_json: dict) -> None:
    """Add the skipped cases and their reasons to the --benchmark-json output, each with the skipped
    result the run wrote (``result``; its devices and run id) where there is one."""
    # the run behind each skip: skipped on this hardware, or one that timed no training (--epochs 0)
    written = {r["case"]: r for r in config.stash.get(RESULTS, [])
               if r.get("status") == "skipped" or (r.get("status") == "ok" and (r.get("metrics") or {}).get("fit_s") is None)}
    output_json["skipped"] = [{**s, **({"result": written[s["case"]]} if s["case"] in written else {})}
                              for s in _SKIP_LOG]


# machine_info fields that change from run to run on the same machine (py-cpuinfo's current clock);
# pytest-benchmark's --benchmark-compare warns on any machine_info difference, so they are dropped.
VOLATILE_CPU_FIELDS = ("hz_actual", "hz_actual_friendly")


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict) -> None:
    """Add GPU, driver and container facts to pytest-benchmark's machine_info; drop volatile fields.

    Per-job facts (Slurm job id, git commit) stay out of machine_info: pytest-benchmark keeps the
    commit in commit_info, and the run's own JSON has both.
    """
    facts = environment.collect()
    keys = ("gpu_names", "gpu_count", "cuda_driver", "torch_cuda_build", "cudnn", "nccl",
            "container_runtime", "container_image", "torch", "lightning", "cpu_model")
    machine_info["cifar_bench"] = {k: facts.get(k) for k in keys}
    for field in VOLATILE_CPU_FIELDS:
        machine_info.get("cpu", {}).pop(field, None)


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int):
    """A failed or stopped suite writes no --benchmark-json: a file with the cases that did run
    would look like a valid run of the suite. (Runs first, before pytest-benchmark saves.)"""
    bench_session = getattr(session.config, "_benchmarksession", None)
    if bench_session is not None and bench_session.json and (session.testsfailed or exitstatus != 0):
        session.config.stash[JSON_WITHHELD] = str(bench_session.json)
        bench_session.json = None
    session.exitstatus = suite_status(exitstatus, session.config.stash.get(CASE_STATUSES, []), session.testsfailed)
    session.config.stash[SUITE_STATUS] = int(session.exitstatus)  # (the terminal summary is given pytest's own)
    yield


def suite_status(pytest_status: int, case_statuses: list[int], tests_failed: int) -> int:
    """The suite's exit status in the project's table (docs/exit-codes.md), from pytest's (pure).

    The worst of the cases' own statuses (4 > 1 > 3 > 2 > 0) where pytest says only "tests failed"
    (1) or "interrupted" (2: the stop after a case refused its input, or Ctrl-C, which is bad input
    in the project's table, so 4); a failed test that was no case's failing run counts as 1. pytest's
    other statuses (0, usage errors) stay as they are.
    """
    from bench.core.exitcodes import ExitCode, worst

    if pytest_status == pytest.ExitCode.INTERRUPTED:  # the bad-input stop (a case's 2 is listed) or Ctrl-C
        return worst(case_statuses if ExitCode.BAD_INPUT in case_statuses else case_statuses + [ExitCode.INTERRUPTED])
    if pytest_status == pytest.ExitCode.TESTS_FAILED:
        others = [ExitCode.FAILED] if tests_failed > len(case_statuses) or not case_statuses else []
        return worst(case_statuses + others)
    return pytest_status


JSON_WITHHELD = pytest.StashKey[str]()
SUITE_STATUS = pytest.StashKey[int]()  # the suite's exit status in the project's table (suite_status)


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if (withheld := config.stash.get(JSON_WITHHELD, None)) and config.stash.get(RESULTS, []):  # (said if a case ran)
        why = "was interrupted" if config.stash.get(SUITE_STATUS, None) == 4 else "failed"  # (4: interrupted)
        terminalreporter.write_line(f"cifar-bench: {withheld} not written: the suite {why} (see above)")
    results = config.stash.get(RESULTS, [])
    if results and global_rank() == 0:
        terminalreporter.section("cifar-bench cases")
        terminalreporter.write_line("fit_s: the training loop only (the figure compared against baselines); "
                                    "pytest-benchmark's table below times each whole call")
        terminalreporter.write_line(format_table(results))  # every round once, failed ones as not a figure
        if len(order := config.stash.get(ORDER, [])) > len(set(o.split()[0] for o in order)):
            terminalreporter.write_line("order of the rounds (interleaved): " + ", ".join(order))
        for r in results:
            if r.get("path"):
                terminalreporter.write_line(f"{r['case']}: {r['path']}")
        from bench.measure.breakdown import format_breakdown, rank_breakdowns

        last_of_case = {r["case"]: r for r in results}  # one breakdown a case: its last round's
        for case, r in last_of_case.items():
            if text := format_breakdown(rank_breakdowns(r)):
                terminalreporter.write_line(f"\n{case}: {text}")
