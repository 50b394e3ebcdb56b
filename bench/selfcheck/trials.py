"""Verdict trials: false alarms on identical pairs, detected injected slowdowns, the detectable change.

    python -m bench.selfcheck.trials --preset smoke --rounds 5 --pairs 20 --slowdowns 10 --out runs/trials

Issue 27's "done when", as one command (not part of CI: the full trials take hours of ``make bench``):

* ``--pairs`` identical pairs: ``make bench PRESET=P ROUNDS=R`` twice; a baseline is recorded from the
  first (``--force``, so noisy groups count too, with their warning); the second is compared with it.
  At most 1 regression is expected in all (the per-case level is 5 %, shared by Holm's rule).
* ``--slowdowns`` injected slowdowns: the same pair, the second with the step test knob
  (``BENCH_TEST_STEP_SLEEP_S``, a sleep after every training step: a software slowdown that leaves the
  CPU supply alone) sized so the ``baseline`` case slows by the tolerance and the detectable change of
  the first group composed as ratios (``slowdown = (1 + tol)(1 + det) - 1``, at least ``tol + det``;
  ``sleep = slowdown x fit_s / optimizer_steps``), compared with
  ``--accept-test-knobs``. At least 8 of 10 should be ``regression``.

It writes ``OUT/trials.md`` (the trial table: preset, repeats, spread, detectable change, verdict per
case and trial; the counts against the criteria; the detectable change with 3, 5 and 10 repeats from
the measured spreads, and the drift between the first groups) and ``OUT/trials.json`` (the rows).
The machine's load average before and after is in the header: trials on a busy machine measure the
load (docs/verdict-trials.md says how to run them on an idle one). Runs tainted by other load are not
judged (verdict ``tainted``) unless ``BENCH_CONTENTION_RULE=off`` is set, which the header records.
The table-making part (:func:`trial_table`, :func:`detectable_table`) is pure and tested with literal data.
Exit status: 0 the trials ran (whatever the verdicts: a trial is a measurement, not a test), 2 bad
input, 1 a ``make bench`` failed (the table so far is written).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from bench.core.exitcodes import ExitCode
from bench.core.options import tolerance_percent
from bench.results.baselines import record_baseline
from bench.results.compare import compare, exit_code
from bench.results.drift import estimate
from bench.results.power import detectable_change, noise_check
from bench.results.recording import qualify
from bench.results.reading import read_records
from bench.results.stats import ALPHA
from bench.results.taint import RULE_ENV

REPO = Path(__file__).resolve().parents[2]
REPEATS = (3, 5, 10)


def injected_pct(tolerance_pct: float, detectable_pct: float) -> float:
    """The slowdown to inject (percent): the tolerance and the detectable change composed as ratios,
    (1 + tol)(1 + det) - 1, at most 100 %. Why ratios: a slowdown is called a regression beyond the
    tolerance when its one-sided confidence bound clears 1 + tol (when det > tol); the detectable
    change is the ratio the test finds with 80 % power against 1, so against 1 + tol it takes
    (1 + tol)(1 + det). An additive tol + det would be found with less than 80 % power."""
    return min(((1 + tolerance_pct / 100.0) * (1 + detectable_pct / 100.0) - 1) * 100.0, 100.0)


def trial_table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown table of trial rows: ``trial`` (e.g. "identical 3"), ``case`` (label), ``repeats``
    ("5/5"), ``sd_log`` (fraction or None), ``detectable_pct``, ``injected_pct`` (None for identical),
    ``diff_pct`` (measured, percent), ``verdict``, ``exit``; then the counts against the criteria."""
    head = "| trial | case | repeats now/base | sd of log fit_s | detectable | injected | measured | verdict | exit |"
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        lines.append(f"| {r['trial']} | {r['case']} | {r['repeats']} | {_pct(r.get('sd_log'), 100.0)} | "
                     f"{_pct(r.get('detectable_pct'))} | {_pct(r.get('injected_pct'))} | "
                     f"{_pct(r.get('diff_pct'), sign=True)} | {r['verdict']} | {r['exit']} |")
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {line}" for line in summary(rows)) + "\n"


def summary(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Counts against the issue's criteria: regressions among identical pairs (trials "identical N";
    <= 1 in all), and injected slowdowns ("slowdown N") of the ``baseline`` case called a regression
    (>= 8 of 10; a trial without a baseline counts as not called); verdict counts."""
    same = [r for r in rows if r["trial"].startswith("identical")]
    slowed = [r for r in rows if r["trial"].startswith("slowdown") and r["case"].startswith(("baseline", "all"))]
    out = []
    if same:
        trials = len({r["trial"] for r in same})
        bad = sum(r["verdict"] == "regression" for r in same)
        out.append(f"identical pairs: {bad} regression(s) in {len(same)} rows of {trials} pair(s) "
                   f"(criterion: at most 1 in 20 pairs); verdicts {_counts(same)}")
    if slowed:
        hit = sum(r["verdict"] == "regression" for r in slowed)
        out.append(f"injected slowdowns (baseline case): {hit} of {len(slowed)} called a regression "
                   f"(criterion: at least 8 of 10); verdicts {_counts(slowed)}")
    return out


def detectable_table(spreads: dict[str, list[float]], drift_sd: dict[str, float | None] | None = None) -> str:
    """Markdown table of the detectable change (one case compared, level 5 %, power 80 %) with 3, 5 and
    10 repeats a side, at the median of each case's measured spreads (``spreads``: case label ->
    sd of log fit_s of each first group, fractions); ``drift_sd``: the between-group sd of log fit_s
    estimated from those groups (None: not estimable), which the detectable change of a comparison
    against a baseline of such groups also counts (docs/comparison.md)."""
    lines = ["| case | groups | median sd of log fit_s | detectable, 3 / 5 / 10 a side | between-group sd |",
             "|---|---|---|---|---|"]
    for case, sds in spreads.items():
        sd = statistics.median(sds)
        det = " / ".join(f"{detectable_change(n, n, sd, ALPHA) * 100.0:.1f} %" for n in REPEATS)
        between = (drift_sd or {}).get(case)
        lines.append(f"| {case} | {len(sds)} | {sd * 100.0:.1f} % | {det} | {_pct(between, 100.0)} |")
    return "\n".join(lines) + "\n"


def _pct(value: float | None, scale: float = 1.0, sign: bool = False) -> str:
    return "-" if value is None else f"{value * scale:{'+' if sign else ''}.1f} %"


def _counts(rows: Sequence[dict[str, Any]]) -> str:
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["verdict"]] = counts.get(r["verdict"], 0) + 1
    return ", ".join(f"{v} {n}" for v, n in sorted(counts.items()))


def _sd_log(samples: list[float]) -> float | None:
    return statistics.stdev(math.log(s) for s in samples) if len(samples) > 1 else None


def _bench(out: Path, args: argparse.Namespace, env: dict[str, str] | None = None) -> list:
    """One ``make bench`` into ``out``; its records. Raises RuntimeError when make fails."""
    cmd = ["make", "-s", "bench", f"PRESET={args.preset}", f"ROUNDS={args.rounds}", f"RUNS={out}", *args.make_arg]
    print("+", " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, cwd=REPO, env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        raise RuntimeError(f"make bench into {out} exited {proc.returncode}")
    return read_records(sorted(out.glob("*.json")), accept_test_knobs=bool(env))


def _pair(i: int, kind: str, args: argparse.Namespace) -> tuple[list[dict], dict[str, list[float]]]:
    """One trial: first group, baseline, second group (slowed for ``kind == "slowdown"``), comparison."""
    first = _bench(args.out / f"{kind}-{i}-a", args)
    try:
        baseline, _ = record_baseline(first, f"trial-{kind}-{i}", "bench.selfcheck.trials")
    except ValueError as err:  # every first run tainted or invalid: this trial has no baseline, and says so
        return [{"trial": f"{kind} {i}", "case": "all", "repeats": f"0/{len(first)}", "sd_log": None,
                 "detectable_pct": None, "injected_pct": None, "diff_pct": None,
                 "verdict": f"no baseline ({str(err)[:120]})", "exit": "-"}], {}
    qualify(baseline, args.tolerance, force=True)
    groups = {c: e["fit_s_samples"] for c, e in baseline["cases"].items()}
    env, injected = None, None
    if kind == "slowdown":
        from bench.run.knobs import STEP_SLEEP_ENV  # (imports Lightning: only where a slowdown is injected)

        samples = groups["baseline"]
        det = (noise_check(samples, args.tolerance, ALPHA) or (0.0, None))[0]
        injected = injected_pct(args.tolerance, det)
        steps = next(r.result["metrics"]["optimizer_steps"] for r in first if r.valid and r.case == "baseline")
        env = {STEP_SLEEP_ENV: repr(injected / 100.0 * statistics.median(samples) / steps)}
    second = _bench(args.out / f"{kind}-{i}-b", args, env)
    rows = compare(second, baseline, tolerance_pct=args.tolerance)
    code = exit_code(rows)
    return [{"trial": f"{kind} {i}", "case": c.label, "repeats": f"{c.n_now}/{c.n_baseline}",
             "sd_log": _sd_log(groups.get(c.case, [])), "detectable_pct": c.detectable_pct,
             "injected_pct": injected, "diff_pct": c.diff_pct, "verdict": c.verdict, "exit": code}
            for c in rows], groups


def write_doc(path: Path, rows: list[dict], firsts: dict[str, list[list[float]]], header: list[str]) -> None:
    """``trials.md`` (header, trial table, detectable-change table) and ``trials.json`` beside it."""
    spreads = {c: [s for g in gs if (s := _sd_log(g)) is not None] for c, gs in firsts.items()}
    drift = {c: (math.sqrt(d.var_between) if (d := estimate(gs)) else None) for c, gs in firsts.items()}
    text = ("# Verdict trials\n\n" + "\n".join(f"- {h}" for h in header) + "\n\n" + trial_table(rows) +
            "\n## Detectable change from the measured spreads\n\n" + detectable_table(
                {c: s for c, s in spreads.items() if s}, drift))
    path.write_text(text, encoding="utf-8")
    path.with_suffix(".json").write_text(json.dumps({"header": header, "rows": rows}, indent=1), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    """Run the trials (module docstring); write OUT/trials.md as they go."""
    ap = argparse.ArgumentParser(prog="python -m bench.selfcheck.trials", description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="smoke")
    ap.add_argument("--rounds", type=int, default=5, help="ROUNDS of each make bench (repeats a side)")
    ap.add_argument("--pairs", type=int, default=20, help="identical pairs")
    ap.add_argument("--slowdowns", type=int, default=10, help="pairs with an injected slowdown")
    ap.add_argument("--tolerance", type=tolerance_percent, default=10.0, help="percent, as compare's")
    ap.add_argument("--out", type=Path, default=REPO / "runs" / f"trials-{time.strftime('%Y%m%d-%H%M%S')}")
    ap.add_argument("--make-arg", action="append", default=[], help="extra make variable, e.g. BENCH_ARGS=... (repeatable)")
    ap.add_argument("--label", default="", help="how busy the machine was, said in the header (e.g. 'idle node')")
    args = ap.parse_args(argv)
    if args.rounds < 3 or args.pairs < 0 or args.slowdowns < 0 or args.tolerance <= 0:
        print("trials: --rounds must be >= 3 (a verdict needs 3 a side), --pairs/--slowdowns >= 0, --tolerance > 0",
              file=sys.stderr)
        return int(ExitCode.BAD_INPUT)
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    header = [f"preset {args.preset}, {args.rounds} repeats a side (make bench ROUNDS={args.rounds}), tolerance "
              f"{args.tolerance:g} %", f"machine: {args.label or 'not labelled'}; load average (1 min) at the start "
              f"{os.getloadavg()[0]:.2f}", f"contention rule: {os.environ.get(RULE_ENV) or 'on'}"]
    rows: list[dict] = []
    firsts: dict[str, list[list[float]]] = {}
    status = 0
    try:
        for kind, n in (("identical", args.pairs), ("slowdown", args.slowdowns)):
            for i in range(1, n + 1):
                more, groups = _pair(i, kind, args)
                rows += more
                for case, samples in groups.items():
                    firsts.setdefault(case, []).append(samples)
                write_doc(args.out / "trials.md", rows, firsts, header)
    except RuntimeError as err:
        print(f"trials: {err}; the table so far is in {args.out / 'trials.md'}", file=sys.stderr)
        status = 1
    header.append(f"load average (1 min) at the end {os.getloadavg()[0]:.2f}")
    write_doc(args.out / "trials.md", rows, firsts, header)
    print((args.out / "trials.md").read_text(encoding="utf-8"))
    return status


if __name__ == "__main__":
    sys.exit(main())
