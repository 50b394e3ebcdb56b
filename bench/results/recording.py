"""The ``baseline record`` command: write a baseline file from the valid runs among some results.

    cifar-bench baseline record RESULTS... --name NAME [--source TEXT] [--force]

Reads through :func:`bench.results.reading.read_records`, records with :func:`bench.results.baselines.record_baseline`
and writes where :func:`bench.results.baselines.target_path` allows (never over a file without ``--force``,
never over the shipped ``a100-2node``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.core.options import tolerance_percent
from bench.results.baselines import case_groups, record_baseline, target_path, write_baseline
from bench.results.drift import noise_check_groups
from bench.results.power import noise_check
from bench.results.reading import read_records
from bench.results.stats import ALPHA, MIN_SAMPLES_FOR_TEST


def add_parser(sub) -> None:
    """``baseline record RESULTS... --name NAME [--source TEXT] [--force]``."""
    b = sub.add_parser("baseline", help="stored baselines")
    bsub = b.add_subparsers(dest="baseline_cmd", required=True)
    r = bsub.add_parser("record", help="write baselines/NAME.json from the valid runs among RESULTS")
    r.add_argument("results", nargs="+", type=Path, help="result JSON, pytest-benchmark JSON or baseline files")
    r.add_argument("--name", required=True, help="baseline name (baselines/NAME.json)")
    r.add_argument("--source", default="recorded with cifar-bench baseline record")
    r.add_argument("--force", action="store_true", help="replace an existing baseline of that name; record a "
                   "case too noisy for the tolerance, with a warning kept in the file")
    r.add_argument("--tolerance", type=tolerance_percent, default=10.0,
                   help="slowdown in percent the baseline must be able to show (default 10, as compare's)")
    r.set_defaults(func=cmd_record)


def qualify(baseline: dict, tolerance_pct: float, force: bool) -> list[str]:
    """Noise qualification: each case whose spread makes the detectable change (same repeats on both
    sides, :func:`bench.results.power.noise_check`) larger than the tolerance. Refused without ``force``;
    with it, the warning is kept in the case's entry (``warnings``) and returned.

    Raises:
        ValueError: a case too noisy, without ``force`` (the message says how many repeats would do).
    """
    if tolerance_pct <= 0:
        raise ValueError(f"--tolerance is a slowdown in percent and must be > 0, got {tolerance_pct}")
    lines = []
    # compare shares its level over the cases by Holm's rule: the smallest p meets ALPHA / cases, so a
    # baseline of k cases is qualified at that level (else record said 14 repeats where compare needs 18)
    judged = [e for e in baseline["cases"].values() if len(e.get("fit_s_samples") or []) >= MIN_SAMPLES_FOR_TEST]
    k_cases = max(1, len(judged))
    level = ALPHA / k_cases
    for case, entry in baseline["cases"].items():
        groups = case_groups(entry)
        check = noise_check_groups(groups, tolerance_pct, level) or noise_check(entry["fit_s_samples"], tolerance_pct, level)
        if check is None or check[0] <= tolerance_pct:
            continue
        detectable, needed = check
        n, k = len(entry["fit_s_samples"]), len(groups)
        spread = (f"{n} repeats at this spread (CV {entry['fit_s_stdev'] / entry['fit_s_mean']:.1%})" if k < 2 else
                  f"{n} repeats in {k} groups at this spread and drift between groups")
        shared = f" (at {level:.2%} one-sided: {ALPHA:.0%} shared by Holm's rule over {k_cases} cases, as compare " \
                 "judges them)" if k_cases > 1 else ""
        line = (f"case {case!r}: with {spread} a comparison detects only slowdowns of {detectable:.1f}% or more{shared}, "
                f"above the {tolerance_pct:g}% tolerance; " +
                (f"{needed} repeats a side would be needed (make bench ROUNDS={needed})" if needed and k < 2 else
                 f"{needed} repeats in the new run would be needed (make bench ROUNDS={needed})" if needed else
                 "no number of repeats would do: reduce the machine's noise" if k < 2 else
                 "no number of repeats would do, the drift between groups alone is too large: record more groups "
                 "(make bench runs at different times) or measure both sides interleaved"))
        entry.setdefault("warnings", []).append(line)
        lines.append(line)
    if lines and not force:
        raise ValueError("; ".join(lines) + ". Nothing written: record more repeats, or pass --force to "
                         "record it with this warning kept in the file")
    return lines


def cmd_record(args: argparse.Namespace) -> int:
    """Record the valid runs; print what was left out and why. Bad input raises ValueError (exit 2)."""
    path = target_path(args.name, args.force)
    baseline, left_out = record_baseline(read_records(args.results), args.name, args.source)
    for line in left_out:
        print(f"left out {line}")
    counts = ", ".join(f"{c} n={len(e['fit_s_samples'])}" for c, e in baseline["cases"].items())
    if few := [c for c, e in baseline["cases"].items() if len(e["fit_s_samples"]) < 3]:
        print(f"note: {', '.join(few)} recorded from fewer than 3 runs: no significance test is possible, so "
              "compare calls every run against it inconclusive; record from 3 or more repeats (make bench ROUNDS=3, or the suite's "
              "--bench-rounds 3)")
    for line in qualify(baseline, args.tolerance, args.force):
        print(f"warning: {line}")
    print(f"baseline: {write_baseline(baseline, path, force=args.force)} ({counts})")
    return 0
