"""``cifar-bench ab``: is B slower than A? Two sides alternated on the same machine or allocation.

    cifar-bench ab --b-env OMP_NUM_THREADS=1 --pairs 5 --cases baseline --data synthetic --preset smoke
    cifar-bench ab --a-cmd 'apptainer exec old.sif python' --b-cmd 'apptainer exec new.sif python' ...
    cifar-bench ab --from-results runs/ab-STAMP/ab.json [--tolerance 5]      # judge again, run nothing
    sbatch slurm/ab.sh                                                       # every pair in one allocation

Each pair runs every case once per side, in the order AB, BA, AB, ... (:mod:`bench.scaling.ab_sides`),
each run a fresh ``python -m bench run`` (prefixed by ``--launcher``, e.g. an ``srun`` step, when
given). Results are ordinary result files, one folder per side (``OUT/A``, ``OUT/B``; each run id
names its side and pair), readable by ``table``, ``compare`` and ``report``. ``OUT/ab.json`` (format
below) is rewritten after every pair, so an interrupted comparison can be judged with
``--from-results``. The design is fixed: ``--pairs`` pairs, then one test (docs/ab.md).

The answer (:mod:`bench.results.abcompare`): per case the median ratio B/A with its 95 % interval, the
verdict (paired t-test on log ratios, the verdicts' rule) with the detectable change, and what
differs between A's and B's recorded environments. Exit status: ``compare``'s (1 a regression, 5 a case
with no valid pair, 6 nothing judged, else 0); 4 when stopped by Ctrl-C/SIGTERM (ab.json kept); 2 bad input.

``ab.json``: ``{"schema": "cifar-bench/ab", "schema_version": 1, "created_utc", "tolerance_pct",
"sides": {"A"|"B": {"command", "env", "args"}}, "cases", "pairs": [{"pair" (from 1), "case", "order"
("AB"/"BA"), "A"/"B": result path relative to ab.json's folder, "exit": {"A", "B"}}], "rows": [the
verdict rows, when judged]}``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import signal
import subprocess
from pathlib import Path

from bench.core.config import CASES, ConfigError
from bench.core.exitcodes import ExitCode
from bench.core.files import folder_argument
from bench.core.options import tolerance_percent
from bench.scaling.ab_sides import (NAMES, Side, check_command, check_data, check_options, order, run_argv, run_id,
                                    side_of)

AB_SCHEMA = "cifar-bench/ab"


def _cases(text: str) -> list[str]:
    cases = [c.strip() for c in text.split(",") if c.strip()]
    if not cases or any(c not in CASES for c in cases) or len(set(cases)) != len(cases):
        raise argparse.ArgumentTypeError(f"expected a comma list of distinct cases from {', '.join(CASES)}, got {text!r}")
    return cases


def add_parser(sub) -> None:
    """Register ``ab`` on the ``cifar-bench`` subparsers: the ``run`` options (common to both sides) and its own."""
    from bench.scaling.sweep import _Into
    from bench.run.command import add_parser as add_run_parser

    p = sub.add_parser("ab", conflict_handler="resolve", help="is B slower than A? alternate two images, "
                       "environments or settings on this machine or allocation; exit 1 on a regression",
                       description="Run pairs of runs of side A and side B, alternated (AB, BA, ...), and judge "
                                   "the ratio B/A of each pair (docs/ab.md). The run options are common to both sides.")
    add_run_parser(_Into(p))
    run_actions = [(a.dest, a.option_strings[0], type(a).__name__) for a in p._actions if a.option_strings
                   and a.dest not in ("help", "case", "repeats", "out_dir")]
    p.add_argument("--cases", type=_cases, default=["baseline"], help="comma list of cases (default baseline)")
    for action in [a for a in p._actions if a.dest in ("case", "repeats")]:  # a run's options: --cases, --pairs here
        p._handle_conflict_resolve(None, [(option, action) for option in action.option_strings])
    for name in NAMES:
        low = name.lower()
        p.add_argument(f"--{low}-cmd", help=f"side {name}: command that runs Python, e.g. 'apptainer exec "
                                            f"{low}.sif python' or '/opt/other/.venv/bin/python' (default: this Python)")
        p.add_argument(f"--{low}-env", action="append", metavar="NAME=VALUE",
                       help=f"side {name}: an environment variable for its runs (repeatable), e.g. NCCL_ALGO=Ring")
        p.add_argument(f"--{low}-args", metavar="'RUN OPTIONS'",
                       help=f"side {name}: run options of its own, after the common ones; give them with '=': "
                            f"--{low}-args='--num-workers 2' (the work must stay the same)")
    p.add_argument("--pairs", type=int, default=5, help="pairs of runs per case (default 5; >= 3 for a verdict)")
    p.add_argument("--tolerance", type=tolerance_percent, default=10.0, help="allowed slowdown of B in percent (default 10)")
    p.add_argument("--launcher", help="prefix of every run, e.g. 'srun -N2 --ntasks-per-node=2' (slurm/ab.sh)")
    p.add_argument("--out", dest="out_dir", type=folder_argument, help="folder of the results (default runs/ab-TIME)")
    p.add_argument("--from-results", type=Path, metavar="AB_JSON", help="judge the runs of this ab.json; run nothing")
    p.add_argument("--accept-test-knobs", action="store_true",
                   help="tests only: judge runs made with test knobs (BENCH_TEST_*) as if they were real")
    p.set_defaults(func=cmd_ab, _run_actions=run_actions)


def _sides(args: argparse.Namespace) -> dict[str, Side]:
    return {n: side_of(n, getattr(args, f"{n.lower()}_cmd"), getattr(args, f"{n.lower()}_env"),
                       getattr(args, f"{n.lower()}_args")) for n in NAMES}


def cmd_ab(args: argparse.Namespace) -> int:
    """The ``ab`` command (see the module docstring); returns the exit status. Bad input: ValueError."""
    from bench.results.resultfile import utc_now
    from bench.scaling.sweep import run_argv as common_argv

    if args.from_results:
        return judge(args.from_results, args.tolerance, args.accept_test_knobs)
    if args.pairs < 1:
        raise ConfigError(f"--pairs must be >= 1, got {args.pairs}")
    sides, common = _sides(args), common_argv(args)
    for side in sides.values():
        check_options(side, common, args.cases)  # every run valid before anything runs
        check_command(side)
    check_data(getattr(args, "data", None) or os.environ.get("BENCH_DATA"))  # as the runs will read it
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = Path(args.out_dir or f"runs/ab-{stamp}")
    manifest = {"schema": AB_SCHEMA, "schema_version": 1, "created_utc": utc_now(), "tolerance_pct": args.tolerance,
                "sides": {n: s.as_json() for n, s in sides.items()}, "cases": args.cases, "pairs": []}
    print("\n".join(f"ab: side {s.describe()}" for s in sides.values()), flush=True)
    launcher = _split(args.launcher)
    before = signal.signal(signal.SIGTERM, _stop)  # scancel, a time limit: end as Ctrl-C does, the run stopped too
    try:
        for i in range(args.pairs):
            for case in args.cases:
                manifest["pairs"].append(_run_pair(sides, launcher, common, case, i, stamp, out, args.pairs))
                _write(manifest, out)
    except KeyboardInterrupt:
        done = len(manifest["pairs"])
        print(f"ab: interrupted after {done} pair(s); " + (
            f"judge them with cifar-bench ab --from-results {out / 'ab.json'}" if (out / "ab.json").exists() else
            f"no pair finished, so there is nothing to judge (no ab.json; the runs so far are in {out})"), flush=True)
        return int(ExitCode.INTERRUPTED)
    finally:
        signal.signal(signal.SIGTERM, before)
    return judge(out / "ab.json", args.tolerance, args.accept_test_knobs)


def _stop(signum, frame) -> None:
    raise KeyboardInterrupt


def _split(text: str | None) -> list[str]:
    import shlex

    return shlex.split(text) if text else []


def _run_pair(sides: dict[str, Side], launcher: list[str], common: list[str], case: str, pair: int, stamp: str,
              out: Path, pairs: int) -> dict:
    """Run one pair of ``case`` (both sides, in the pair's order); its ab.json entry."""
    entry = {"pair": pair + 1, "case": case, "order": "".join(order(pair)), "exit": {}}
    for name in order(pair):
        rid = run_id(case, name, pair, stamp)
        cmd = run_argv(sides[name], launcher, common, case, out)
        print(f"ab: pair {pair + 1}/{pairs}, {case}, side {name}: {' '.join(cmd)}", flush=True)
        proc = subprocess.Popen(cmd, env={**os.environ, **sides[name].env, "BENCH_RUN_ID": rid})
        try:
            entry["exit"][name] = proc.wait()
        except KeyboardInterrupt:  # Ctrl-C reaches the run too (same process group); SIGTERM is passed on
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            proc.wait()
            raise
        entry[name] = str(Path(name) / f"{rid}.json")
    return entry


def _write(manifest: dict, out: Path) -> None:
    from bench.results.resultfile import write_json_atomic

    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(manifest, out / "ab.json")


def _record(folder: Path, relative: str | None, accept: bool):
    from bench.results.reading import read_records

    path = folder / relative if relative else None
    return read_records([path], accept_test_knobs=accept)[0] if path and path.is_file() else None


def load_pairs(path: Path, accept_test_knobs: bool = False) -> tuple[dict, dict[str, list]]:
    """An ab.json and its pairs per case label (records; None where a run left no result).

    Raises:
        ValueError: not an ab.json of this schema, or a result file that is not one.
    """
    from bench.results.records import group_label

    try:
        manifest = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: cannot read an ab.json ({err}); pass the ab.json an ab run wrote") from None
    if not isinstance(manifest, dict) or manifest.get("schema") != AB_SCHEMA or not isinstance(manifest.get("pairs"), list):
        raise ValueError(f"{path}: not an ab.json (schema {AB_SCHEMA}); pass the ab.json an ab run wrote")
    pairs: dict[str, list] = {}
    labels: dict[str, str] = {}
    for entry in manifest["pairs"]:
        pair = tuple(_record(Path(path).parent, entry.get(n), accept_test_knobs) for n in NAMES)
        found = next((r for r in pair if r is not None), None)
        label = labels.setdefault(entry["case"], group_label(found.group) if found else entry["case"])
        pairs.setdefault(label, []).append(pair)
    return manifest, pairs


def judge(path: Path, tolerance_pct: float, accept_test_knobs: bool) -> int:
    """Print the A/B answer of an ab.json, store its rows there; return :func:`bench.results.compare.exit_code`."""
    from bench.results.abcompare import compare_ab, differences, format_rows
    from bench.results.compare import exit_code

    manifest, pairs = load_pairs(path, accept_test_knobs)
    if not pairs:
        print(f"ab: {path} lists no pair that finished: nothing to judge")
        return int(ExitCode.NO_VALID_RUN)
    rows = compare_ab(pairs, tolerance_pct)
    print("\n" + format_rows(rows), end="")
    print("\nsides:\n" + "\n".join(f"  {Side.from_json(n, s).describe()}" for n, s in manifest["sides"].items()))
    print("\nwhat changed (A -> B):\n" + "\n".join(f"  {line}" for line in differences(pairs) or
                                                    ["nothing recorded differs"]))
    if accept_test_knobs:
        print("note: --accept-test-knobs: runs with test knobs were judged; not a real benchmark")
    _write({**manifest, "tolerance_pct": tolerance_pct, "rows": [dataclasses.asdict(r) for r in rows]}, Path(path).parent)
    print(f"ab: {path}; results in {Path(path).parent / 'A'} and {Path(path).parent / 'B'}")
    return exit_code(rows)
