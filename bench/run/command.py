"""The ``run`` command: its options, the configuration they give, and the run itself.

    cifar-bench run --case ddp --data ../shared/data/cifar10-jpeg.tar.gz --preset cpu --devices 2

Every option is generated from a :class:`bench.core.config.BenchConfig` field (bench/core/options.py); ``sweep``
takes the same options (:func:`add_parser`, :func:`run_config`). A run writes one result JSON (global
rank 0); ``--repeats N`` runs N fresh processes, each with its own JSON. Its exit statuses are
bench/core/exitcodes.py's; bad input (:func:`is_bad_input`) leaves no result and no new ``--out`` folder.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import traceback
from pathlib import Path

from bench.core.config import BenchConfig, ConfigError, make_config, weak_overrides
from bench.core.exitcodes import ExitCode
from bench.core.options import add_field_option


def add_parser(sub) -> None:
    """Add ``run`` (every BenchConfig field as an option, plus ``--repeats``) to ``sub`` (argparse subparsers)."""
    # Every option is generated from a BenchConfig field and its documentation (bench/core/options.py),
    # so the help, its defaults and the config cannot drift apart. "resolve": an option added by
    # hand below the loop replaces the generated one of the same name.
    p = sub.add_parser("run", help="run one benchmark case and write its result JSON", conflict_handler="resolve",
                       description="Run one benchmark case and write its result JSON. Options left out keep "
                                   "the preset's value (shown per preset where the presets differ).")
    for f in dataclasses.fields(BenchConfig):
        add_field_option(p, f)
    p.add_argument("--repeats", type=int, default=1, metavar="N",
                   help="run the case N times, each in a fresh process with its own JSON (fit_s samples) "
                        "(default: 1)")


def run_config(args: argparse.Namespace) -> BenchConfig:
    """The validated config of parsed ``run`` options (ConfigError when invalid); dp without --devices
    takes the visible GPUs (2 where none are visible, which the case then skips)."""
    # every field has a generated option (None = not given: the preset's value); the preset chooses
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(BenchConfig) if f.name != "preset"}
    if args.case == "dp":
        overrides["accelerator"] = overrides["accelerator"] or "gpu"
        overrides["devices"] = overrides["devices"] or _visible_gpus() or 2
    return make_config(args.preset, **weak_overrides(args.preset, overrides))


def _visible_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def cmd_repeats(args: argparse.Namespace, argv: list[str]) -> int:
    """Run ``args.repeats`` fresh ``python -m bench run`` processes; print their fit_s statistics."""
    import os
    import subprocess

    from bench.results.resultfile import format_table, inherited_run_id, load_result, new_run_id, result_path

    config = run_config(args)  # (validated and checked against srun by cmd_run, once for all repeats)
    group = inherited_run_id() or new_run_id(config.case)
    single = [a for i, a in enumerate(argv) if a != "--repeats" and (i == 0 or argv[i - 1] != "--repeats")
              and not a.startswith("--repeats=")]
    results, status = [], 0
    for i in range(args.repeats):
        env = {**os.environ, "BENCH_RUN_ID": f"{group}-r{i}"}
        status = subprocess.run([sys.executable, "-m", "bench", *single], env=env).returncode or status
        path = result_path(config.out_dir, env["BENCH_RUN_ID"])
        if path.exists():
            results.append(load_result(path))
    if results:  # the table `cifar-bench table` prints of these files: medians, CV, runs that are no figure
        print(f"\n{args.repeats} repeats of {config.case} ({len(results)} results):")
        print(format_table(results))
    return status


def cmd_run(args: argparse.Namespace, argv: list[str] | None = None) -> int:
    """The ``run`` command: one run (or ``--repeats`` fresh processes); prints its table, breakdown and
    result path. Returns the exit status (bench.core.exitcodes); bad input raises (see :func:`is_bad_input`)."""
    from bench.run.faults import check_srun

    if args.repeats < 1:
        raise ConfigError(f"--repeats must be >= 1, got {args.repeats}")
    config = run_config(args)
    missing = [p for p in (Path(config.out_dir), *Path(config.out_dir).parents) if not p.exists()]
    check_srun(config)  # before torch is imported: a second, not the start-up of a rank
    lock = _take_out_folder(config.out_dir, argv if argv is not None else sys.argv[1:])
    try:
        if args.repeats > 1:
            return cmd_repeats(args, argv if argv is not None else sys.argv[1:])
        return _run_one(config)
    except Exception as err:
        if lock is not None:
            lock.release()  # first: bad input then leaves no lock, and no new folder
        if is_bad_input(err):
            _remove_empty(missing)  # bad input writes nothing: not even the --out folder the run's checks made
        raise
    finally:
        if lock is not None:
            lock.release()


def _take_out_folder(out_dir: str, argv: list[str]):
    """The results folder's writer lock (bench.results.writerlock), held by the launching process only:
    None in a rank > 0 of an srun step or a launcher's other node, and in processes a holder started.

    Raises:
        FolderBusy: another live run writes ``out_dir`` (exit 2).
    """
    import os

    from bench.results import writerlock

    if "SLURM_STEP_ID" in os.environ and os.environ.get("SLURM_PROCID", "0") != "0":
        return None  # srun starts every rank: global rank 0 holds the folder for them
    if os.environ.get("NODE_RANK", "0").strip() not in ("", "0"):
        return None
    try:
        return writerlock.acquire(out_dir, "cifar-bench " + " ".join(argv))
    except writerlock.FolderUnwritable:
        return None  # the run's own check of --out (runner.check_out_dir) says why, in its words


def _run_one(config: BenchConfig) -> int:
    """One run of ``config`` in this process (see :func:`cmd_run`)."""
    from bench.results.resultfile import format_table
    from bench.run.runner import RunFailed, RunInterrupted, run_case

    try:
        result = run_case(config)
    except RunInterrupted as err:  # the interrupted result is written (rank 0)
        print(f"cifar-bench: interrupted: {err}", file=sys.stderr)
        return ExitCode.INTERRUPTED
    except RunFailed as err:  # the failed result is written (rank 0)
        if not (err.lost or err.explained):  # this rank's own, unexplained error: a bug report needs its traceback
            traceback.print_exception(err.__cause__)
        print(f"cifar-bench: failed: {err.reason}", file=sys.stderr)
        if err.path:
            print(f"result: {err.path}")
        return ExitCode.FAILED
    if result is None:  # not global rank 0: rank 0 reports
        return 0
    print(format_table([result]))
    from bench.measure.breakdown import format_breakdown, rank_breakdowns

    if text := format_breakdown(rank_breakdowns(result)):
        print(text)
    if result.get("profile"):
        print(f"profile: {result['profile']['folder']} (traces and top_ops per global rank)")
    print(f"result: {result['path']}")
    if result["status"] == "skipped":
        print(f"skipped: {result['reason']}")
        return 0
    if not result["sanity"].get("passed", False):
        from bench.results.records import problem_of  # the same words as the tables' "not a figure" note

        print(f"cifar-bench: {problem_of(result, result['metrics'].get('fit_s'))} (exit status {int(ExitCode.SANITY)})",
              file=sys.stderr)
        return ExitCode.SANITY
    return 0


def _remove_empty(folders: list[Path]) -> None:
    """Remove these folders (deepest first) where they are empty; leave any that holds something."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def is_bad_input(err: BaseException) -> bool:
    """A configuration, data or accelerator error (exit 2). ConfigError is checked first: bad options
    are answered before torch is imported (the other two classes live in modules that import it)."""
    if isinstance(err, ConfigError):
        return True
    from bench.data.sources import DataError
    from bench.measure.environment import GPUUnavailableError

    return isinstance(err, (DataError, GPUUnavailableError))
