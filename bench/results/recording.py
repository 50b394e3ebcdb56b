"""The ``baseline record`` command: write a baseline file from the valid runs among some results.

    cifar-bench baseline record RESULTS... --name NAME [--source TEXT] [--force]

Reads through :func:`bench.results.records.read_records`, records with :func:`bench.results.baselines.record_baseline`
and writes where :func:`bench.results.baselines.target_path` allows (never over a file without ``--force``,
never over the shipped ``a100-2node``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.results.baselines import record_baseline, target_path, write_baseline
from bench.results.records import read_records


def add_parser(sub) -> None:
    """``baseline record RESULTS... --name NAME [--source TEXT] [--force]``."""
    b = sub.add_parser("baseline", help="stored baselines")
    bsub = b.add_subparsers(dest="baseline_cmd", required=True)
    r = bsub.add_parser("record", help="write baselines/NAME.json from the valid runs among RESULTS")
    r.add_argument("results", nargs="+", type=Path, help="result JSON, pytest-benchmark JSON or baseline files")
    r.add_argument("--name", required=True, help="baseline name (baselines/NAME.json)")
    r.add_argument("--source", default="recorded with cifar-bench baseline record")
    r.add_argument("--force", action="store_true", help="replace an existing baseline of that name")
    r.set_defaults(func=cmd_record)


def cmd_record(args: argparse.Namespace) -> int:
    """Record the valid runs; print what was left out and why. Bad input raises ValueError (exit 2)."""
    path = target_path(args.name, args.force)
    baseline, left_out = record_baseline(read_records(args.results), args.name, args.source)
    for line in left_out:
        print(f"left out {line}")
    counts = ", ".join(f"{c} n={len(e['fit_s_samples'])}" for c, e in baseline["cases"].items())
    if few := [c for c, e in baseline["cases"].items() if len(e["fit_s_samples"]) < 3]:
        print(f"note: {', '.join(few)} recorded from fewer than 3 runs: one noisy run can then decide a verdict "
              "(and no t-test is possible); record from 3 or more repeats (make bench ROUNDS=3, or the suite's "
              "--bench-rounds 3)")
    print(f"baseline: {write_baseline(baseline, path, force=args.force)} ({counts})")
    return 0
