"""``cifar-bench history``: the history of a system, its change points explained, the newest runs judged.

    cifar-bench history [--json] [--html DIR] [--tolerance PCT] [--level P] [--history DIR]
    cifar-bench history add RESULT.json... [--history DIR]

Exit status (docs/exit-codes.md's table): 0 no regression; 1 the newest runs of a series are a
significant regression against its last stable segment (for cron and CI); 2 bad input (a malformed
or foreign file given to ``add``: refused, the history left as it was); 6 the history holds no run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench.core.exitcodes import ExitCode
from bench.core.options import tolerance_percent
from bench.core.tables import fmt, fmt_seconds, render
from bench.history import store
from bench.history.changepoints import ALPHA, Settings
from bench.history.series import Series, as_json, build


def add_parser(sub) -> None:
    """The ``history`` command and its ``add`` action."""
    h = sub.add_parser("history", help="every run of a system over time: change points and what changed there, "
                                       "the newest runs judged; exit 1 on a regression",
                       description="The history of every run added (by make bench, the suite, slurm/suite.sh or "
                                   "'history add'): per system, configuration and case, fit time over time, change "
                                   "points (E-divisive means, permutation test) with the facts that differ between "
                                   "the segments, and the newest runs against the last stable segment (docs/history.md).")
    h.add_argument("--history", help=f"history folder (default: ${store.ENV}, else {store.default_root()})")
    h.add_argument("--json", action="store_true", help="print the series as JSON for tools")
    h.add_argument("--html", type=Path, metavar="DIR", help="also write a self-contained web page into DIR")
    h.add_argument("--tolerance", type=tolerance_percent, default=10.0, help="allowed slowdown of the newest runs in percent "
                                                                  "(default 10)")
    h.add_argument("--level", type=float, default=ALPHA, help="false-alarm level of the change points per series "
                                                             f"(default {ALPHA:g}; Otava uses 0.001)")
    sub2 = h.add_subparsers(dest="history_cmd", required=False)
    a = sub2.add_parser("add", help="add result files made elsewhere to the history",
                        description="Add per-run result files to the history; every file is checked first, and a "
                                    "malformed or foreign one is refused (exit 2) with nothing added.")
    a.add_argument("results", nargs="+", type=Path, help="per-run result JSON files (runs/latest/*.json)")
    a.add_argument("--history", dest="add_history", help="history folder (as above)")
    h.set_defaults(func=cmd_history)


def cmd_history(args: argparse.Namespace) -> int:
    where = store.root(getattr(args, "add_history", None) or args.history) or store.default_root()
    if args.history_cmd == "add":
        # a results folder's glob (runs/latest/*.json) holds the suite's summary beside the per-run files: skip it
        suites = [p for p in args.results if p.name == "suite.json"]
        if suites and len(suites) == len(args.results):
            raise ValueError(f"{suites[0]}: the suite's summary holds no run of its own: pass the per-run files "
                             f"beside it ({suites[0].parent}/*.json)")
        results = [(store.read_result_file(p), str(p.resolve())) for p in args.results if p.name != "suite.json"]
        done = store.add(results, where)
        print(f"history {where}: {len(done.added)} run(s) added"
              + (f", {len(done.already)} already there (kept as they were)" if done.already else "")
              + (f"; {len(suites)} suite.json skipped (its runs are the per-run files)" if suites else ""))
        return ExitCode.OK
    if not 0 < args.level < 1:
        raise ValueError(f"--level {args.level:g}: give a false-alarm level between 0 and 1, e.g. 0.01")
    entries, skipped = store.load(where)
    for line in skipped:
        print(f"cifar-bench history: {line}", file=sys.stderr)
    if not entries:
        print(f"cifar-bench history: no runs in {where}: run make bench, or add results with "
              "'cifar-bench history add FILES'", file=sys.stderr)
        return ExitCode.NOTHING_JUDGED
    series = build(store.records(entries, where), tol=args.tolerance, settings=Settings(alpha=args.level))
    if args.html:
        from bench.history.page import write_site

        print(f"page: {write_site(series, args.html, where, args.level)}", file=sys.stderr)
    print(json.dumps(as_json(series), indent=1, default=str) if args.json else format_table(series, where))
    return ExitCode.FAILED if any(s.newest.get("verdict") == "regression" for s in series) else ExitCode.OK


def format_table(series: list[Series], where: Path) -> str:
    """The terminal view: one row per series, then each change point and what changed there."""
    rows = []
    for s in series:
        last = s.valid[s.points[-1].index:] if s.points else s.valid
        new = s.newest
        rows.append([s.label, f"{len(s.valid)}/{len(s.runs)}",
                     fmt_seconds(s.steps[-1]["median_after_s"] if s.steps else
                                 (sorted(r.fit_s for r in last)[len(last) // 2] if last else None)),
                     len(s.points), new.get("verdict"),
                     fmt((new.get("ratio") or 1) * 100 - 100, "+.1f") if new.get("ratio") else "-",
                     fmt(new.get("p_value"), ".3f")])
    lines = [f"history: {where}", render(["series", "valid/runs", "fit_s now", "change points", "newest runs",
                                          "vs stable [%]", "p (Holm)"], rows)]
    for s in series:
        for st in s.steps:
            lines.append(f"\n{s.label}: change at run {st['run_number']} ({st['started_utc']}, {st['run_id']}): "
                         f"fit_s {fmt_seconds(st['median_before_s'])} -> {fmt_seconds(st['median_after_s'])} "
                         f"({st['ratio'] * 100 - 100:+.1f} %, permutation p = {st['p_value']:.3f}); what changed:")
            lines += [f"  {line}" for line in st["what_changed"] or ["no recorded fact differs between the segments"]]
        lines += [f"{s.label}: {note}" for note in s.newest.get("notes", [])]
    return "\n".join(lines)
