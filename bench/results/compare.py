"""Compare benchmark results with a baseline file: one row per configuration, with a verdict.

    cifar-bench compare RESULTS... --baseline NAME|PATH [--tolerance PCT]

The rules (docs/comparison.md explains them for users). Current records are grouped by
(case, devices, nodes, scaling mode) (:attr:`bench.results.records.Record.group`); each group is set
against the baseline file's entry of its case. Medians of the fit_s samples, seconds;
r = fit_s now / fit_s baseline, tolerance t percent:

* ``skipped``: the case did not run on this hardware (with the reason); not an error.
* ``invalid``: the group has runs but none is a figure (failed, interrupted, sanity check failed,
  profiled, test knobs; each reason is in the notes). Exit status 5 (NO_VALID_RUN).
* ``no baseline``: the case is not in the baseline file. ``missing``: in the baseline file,
  not in the results.
* ``not comparable``: different work (a :data:`bench.results.baselines.WORK_FIELDS` field differs, named)
  or a different scale (devices, nodes or scaling mode differ from the baseline's entry).
* ``no verdict``: the baseline was measured on other or unknown hardware. Same hardware = same
  GPU model, GPUs per node and nodes (CPU model and cores for CPU runs); software versions do not
  count. Times and ratios are shown as information, with the reason; exit status 0.
* otherwise a time verdict (:func:`bench.results.stats.judge`): ``regression`` (r > 1 + t/100, the
  one-sided Welch test on log times, Holm-adjusted over the rows tested, gives p < 0.05, and the detectable
  change is within the tolerance or the slowdown's confidence bound beyond it; exit status 1),
  ``faster``, ``slower``, ``unchanged``, or ``inconclusive`` (not confirmed, or the detectable change
  exceeds the tolerance; with the repeats that would make it conclusive).
* exit status 6 (NOTHING_JUDGED) when no row was judged and some row is ``not comparable``,
  ``missing`` or ``no baseline``; no ``diff %`` is given for a ``not comparable`` row.

Speedup = fit_s(baseline case) / fit_s(case), from the valid runs of this run's own ``baseline``
case (``speedup``) and the baseline file's (``ref speedup``); scaling efficiency = speedup / devices.
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bench.core.exitcodes import REGRESSION, ExitCode
from bench.core.options import tolerance_percent
from bench.core.tables import fmt, render
from bench.results.baselines import WORK_FIELDS, case_groups, load_baseline, validate_baseline, work_differences
from bench.results.drift import Drift, describe, estimate
from bench.results.envdiff import what_changed_by_case
from bench.results.interconnect_lines import compare_lines
from bench.results.power import holm
from bench.results.reading import read_records, records_of
from bench.results.records import Record, by_group, group_label
from bench.results.stats import MIN_SAMPLES_FOR_TEST, judge, one_sided_test_p
from bench.results.system import hardware_difference, system_of, unchecked
from bench.results.taint import RULE_ENV, overridden

JUDGED = ("faster", "unchanged", "slower", "regression", "inconclusive")


@dataclass(frozen=True)
class CaseComparison:
    """One group of current runs against the baseline file. Times in seconds, diff in percent.

    ``verdict`` is one of :data:`JUDGED` (``basis == "time"``) or ``skipped``, ``invalid``, ``tainted``,
    ``missing``, ``no baseline``, ``not comparable``, ``no verdict`` (``basis`` None).
    ``n_now`` counts valid samples, ``n_invalid`` the runs left out. ``None`` = not available.
    """

    case: str
    label: str
    verdict: str
    fit_s_now: float | None = None
    fit_s_baseline: float | None = None
    diff_pct: float | None = None  # (now - baseline) / baseline * 100; > 0 is slower
    speedup_own: float | None = None
    ref_speedup: float | None = None
    efficiency_own: float | None = None  # fraction, speedup_own / devices_now
    ref_efficiency: float | None = None  # fraction, ref_speedup / devices_baseline
    devices_now: int | None = None
    devices_baseline: int | None = None
    n_now: int = 0
    n_baseline: int = 0
    n_invalid: int = 0
    p_value: float | None = None  # one-sided Welch p on log times, Holm-adjusted over the rows tested
    detectable_pct: float | None = None  # smallest slowdown detected with 80 % power, percent
    repeats_needed: int | None = None  # repeats a side that would make an inconclusive row conclusive
    drift_groups: int | None = None  # baseline groups the drift was estimated from (None: drift unknown)
    basis: str | None = None
    differing_fields: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


def _median(records: list[Record]) -> float | None:
    return statistics.median(r.fit_s for r in records) if records else None


def _reasons(records: list[Record]) -> list[str]:
    counts: dict[str, int] = {}
    for r in records:
        counts[r.problem or ""] = counts.get(r.problem or "", 0) + 1
    return [f"{n} run(s) not a figure: {why}" for why, n in counts.items()]


def compare(records: list[Record], baseline: dict[str, Any], tolerance_pct: float = 10.0) -> list[CaseComparison]:
    """Compare current records (:func:`bench.results.reading.read_records`) with a baseline dict.

    Rows in group order (baseline, dp, ddp, others; devices, nodes), then missing cases.

    Raises:
        ValueError: invalid baseline (see :func:`bench.results.baselines.validate_baseline`) or a negative tolerance.
    """
    validate_baseline(baseline)
    if tolerance_pct < 0:
        raise ValueError(f"--tolerance is a slowdown in percent and must be >= 0, got {tolerance_pct}")
    ref: dict[str, list[Record]] = {}
    for r in records_of(baseline, f"baseline {baseline.get('name')}"):
        ref.setdefault(r.case, []).append(r)
    groups = by_group(records)
    own_base = [r for (case, *_), rs in groups.items() if case == "baseline" for r in rs if r.valid]
    pairs = [_compare_group(g, rs, ref.get(g[0]), own_base, ref.get("baseline"), tolerance_pct)
             for g, rs in groups.items()]
    rows = _judge_time(pairs, tolerance_pct, {case: estimate(case_groups(e)) for case, e in baseline["cases"].items()})
    present = {g[0] for g in groups}
    rows += [CaseComparison(case, group_label(rs[0].group), "missing", fit_s_baseline=_median(rs),
                            n_baseline=len(rs), notes=("case is in the baseline but not in the current results",))
             for case, rs in ref.items() if case not in present]
    return [replace(r, notes=r.notes + baseline_warnings(baseline, r.case)) for r in rows]


def baseline_warnings(baseline: dict[str, Any], case: str) -> tuple[str, ...]:
    """The warnings ``baseline record --force`` kept in the baseline file for ``case`` (e.g. too noisy
    for the tolerance), as notes that every comparison against it repeats."""
    entry = baseline["cases"].get(case) or {}
    return tuple(f"baseline warning (recorded with --force): {w}" for w in entry.get("warnings") or [])


def _judge_time(pairs: list[tuple[CaseComparison, tuple | None]], tol: float,
                drifts: dict[str, Drift | None]) -> list[CaseComparison]:
    """Time verdicts of the rows that get one, their one-sided p-values adjusted together by Holm's rule;
    ``drifts``: each baseline case's between-group drift (None: unknown), counted in its row's test."""
    tested = [i for i, (_, s) in enumerate(pairs) if s and min(map(len, s)) >= MIN_SAMPLES_FOR_TEST]
    adjusted = dict(zip(tested, holm([one_sided_test_p(*pairs[i][1], drifts.get(pairs[i][0].case))
                                      for i in tested])))
    rows = []
    for i, (row, samples) in enumerate(pairs):
        if samples is None:
            rows.append(row)
            continue
        drift = drifts.get(row.case)
        v = judge(*samples, tol, p_value=adjusted.get(i), tests=len(tested), drift=drift)
        holm_note = (f"p adjusted by Holm's rule over the {len(tested)} rows tested",) if len(tested) > 1 else ()
        drift_note = (describe(drift),) if drift is not None else ()
        rows.append(replace(row, verdict=v.verdict, p_value=v.p_value, detectable_pct=v.detectable_pct,
                            repeats_needed=v.repeats_needed, drift_groups=drift.groups if drift else None,
                            notes=row.notes + v.notes + holm_note + drift_note))
    return rows


def _compare_group(group: tuple, runs: list[Record], b: list[Record] | None, own_base: list[Record],
                   ref_base: list[Record] | None, tol: float) -> tuple[CaseComparison, tuple | None]:
    case, label = group[0], group_label(group)
    valid = [r for r in runs if r.valid]
    invalid = [r for r in runs if not r.valid and r.status != "skipped"]
    if not valid and not invalid:
        return CaseComparison(case, label, "skipped", notes=(f"skipped: {runs[0].reason or 'no reason given'}",)), None
    notes = _reasons(invalid)
    if not valid:  # tainted (a contended machine) has its own word; any other problem: invalid
        word = "tainted" if all((r.problem or "").startswith("tainted") for r in invalid) else "invalid"
        return CaseComparison(case, label, word, fit_s_baseline=_median(b or []), n_baseline=len(b or []),
                              n_invalid=len(invalid), notes=tuple(notes + ["no valid run: nothing to judge"])), None
    if b is None:
        return CaseComparison(case, label, "no baseline", fit_s_now=_median(valid), n_now=len(valid),
                              devices_now=valid[0].devices, n_invalid=len(invalid),
                              notes=tuple(notes + ["case is not in the baseline file"])), None
    mixed = [f for f in WORK_FIELDS if any(f in work_differences(valid[0].config, r.config) for r in valid[1:])]
    if mixed:  # no pooled figure: a median over different work describes no run
        return CaseComparison(case, label, "not comparable", fit_s_baseline=_median(b), n_now=len(valid),
                              n_baseline=len(b), n_invalid=len(invalid), differing_fields=tuple(mixed),
                              notes=tuple(notes + [f"the current runs did different work ({', '.join(mixed)} differ): "
                                                   "pass the files of one run folder (runs/bench-STAMP/*.json)"])), None
    systems = [system_of(r.environment) for r in valid]
    other = next((r for r, system in zip(valid, systems) if system != systems[0]), None)
    if other is not None:  # runs given different hardware or cores are not repeats of one measurement
        why = hardware_difference(valid[0].environment, other.environment) or "system facts recorded differently"
        return CaseComparison(case, label, "not comparable", fit_s_baseline=_median(b), n_now=len(valid),
                              n_baseline=len(b), n_invalid=len(invalid),
                              notes=tuple(notes + [f"the current runs ran on different systems ({why}): not pooled"])), None
    if n_off := sum(overridden(r.result or {}) for r in valid):
        notes.append(f"{n_off} run(s) tainted by a contended machine but judged: their contention rule was off "
                     f"({RULE_ENV}=off)")
    figures = _figures(valid, b, own_base, ref_base)
    fields = dict(case=case, label=label, n_invalid=len(invalid), **figures)
    differing = [f for f in WORK_FIELDS if f in work_differences(valid[0].config, b[0].config)]
    if b[0].config is None:
        notes.append("baseline config unknown: cannot check that the runs did the same work")
    if differing:
        notes.append(f"runs did different work: {', '.join(differing)} differ; no timing verdict")
        return CaseComparison(verdict="not comparable", differing_fields=tuple(differing), notes=tuple(notes),
                              **{**fields, "diff_pct": None}), None
    scale = None if b[0].group == group else f"different scale: {label} now, {group_label(b[0].group)} in the baseline"
    why = hardware_difference(valid[0].environment, b[0].environment)
    if why:
        notes.append(f"{why}{'; ' + scale if scale else ''}: times and ratios are information, not a verdict; "
                     "record a baseline on this system (cifar-bench baseline record ... --name NAME) and compare "
                     "against that")
        return CaseComparison(verdict="no verdict", notes=tuple(notes), **fields), None
    if missing := unchecked(valid[0].environment, b[0].environment):
        notes.append(f"{', '.join(missing)} recorded on one side only (a baseline from before they were): not checked")
    if scale:
        notes.append(f"{scale}; no timing verdict")
        return CaseComparison(verdict="not comparable", notes=tuple(notes), **{**fields, "diff_pct": None}), None
    return CaseComparison(verdict="", basis="time", notes=tuple(notes), **fields), \
        ([r.fit_s for r in valid], [r.fit_s for r in b])


def _figures(valid: list[Record], b: list[Record], own_base: list[Record], ref_base: list[Record] | None) -> dict:
    now_t, ref_t = _median(valid), _median(b)
    same_work = own_base and not any(work_differences(valid[0].config, r.config) for r in valid + own_base)
    own = _median(own_base) / now_t if same_work else None
    ref_sp = _median(ref_base) / ref_t if ref_base else None
    return {"fit_s_now": now_t, "fit_s_baseline": ref_t, "diff_pct": (now_t / ref_t - 1.0) * 100.0,
            "speedup_own": own, "ref_speedup": ref_sp, "devices_now": valid[0].devices, "devices_baseline": b[0].devices,
            "efficiency_own": own / valid[0].devices if own is not None else None,
            "ref_efficiency": ref_sp / b[0].devices if ref_sp is not None else None,
            "n_now": len(valid), "n_baseline": len(b)}


def exit_code(comparisons: list[CaseComparison]) -> int:
    """1 (REGRESSION) if a row is a regression, else 5 (NO_VALID_RUN) if a row is invalid or tainted, else 6
    (NOTHING_JUDGED) if no row got a time verdict or ``no verdict`` while some row is ``not comparable``,
    ``missing`` or ``no baseline`` (e.g. a CI gate pointed at another preset's baseline), else 0."""
    verdicts = {c.verdict for c in comparisons}
    if "regression" in verdicts:
        return int(REGRESSION)
    if verdicts & {"invalid", "tainted"}:
        return int(ExitCode.NO_VALID_RUN)
    if not verdicts & {*JUDGED, "no verdict"} and verdicts & {"not comparable", "missing", "no baseline"}:
        return int(ExitCode.NOTHING_JUDGED)
    return int(ExitCode.OK)


#: printed under the table when a judged row's drift is unknown (a baseline recorded as one group)
DRIFT_NOTE = ("drift: unknown for the rows without a drift note (their baseline is one group of runs): the noise used "
              "is the spread within each side, and groups measured at different times can differ by more, so such a "
              "verdict is over-confident. Record the baseline from several make bench runs at different times "
              "(cifar-bench baseline record runs/a/*.json runs/b/*.json runs/c/*.json ...) to estimate the drift, or "
              "measure both sides interleaved in one session to cancel it (docs/comparison.md)")


def format_table(comparisons: list[CaseComparison]) -> str:
    """The comparison as a text table (one row per group), then the notes per group and the drift note.

    ``det %`` is the detectable change (:func:`bench.results.power.detectable_change`)."""
    head = ("case", "verdict", "fit_s now [s]", "fit_s base [s]", "diff %", "det %", "n now/base", "speedup", "eff",
            "ref speedup", "ref eff")
    rows = [(c.label, c.verdict, fmt(c.fit_s_now, ".1f"), fmt(c.fit_s_baseline, ".1f"), fmt(c.diff_pct, "+.1f"),
             fmt(c.detectable_pct, ".1f"), f"{c.n_now}/{c.n_baseline}", fmt(c.speedup_own, ".2f"),
             fmt(c.efficiency_own, ".1%"), fmt(c.ref_speedup, ".2f"), fmt(c.ref_efficiency, ".1%"))
            for c in comparisons]
    notes = [f"  {c.label}: {note}" for c in comparisons for note in c.notes]
    drift = [DRIFT_NOTE] if any(c.basis == "time" and c.drift_groups is None for c in comparisons) else []
    return render(head, rows) + "\n" + ("\nnotes:\n" + "\n".join(notes + drift) + "\n" if notes or drift else "")


def add_parser(sub) -> None:
    """``compare RESULTS... --baseline NAME|PATH [--tolerance PCT]``."""
    c = sub.add_parser("compare", help="compare results with a stored baseline; exit 1 on a regression, "
                                       "5 when a case has no valid run, 6 when nothing could be judged")
    c.add_argument("results", nargs="+", type=Path, help="result JSON, pytest-benchmark JSON or baseline files")
    c.add_argument("--baseline", required=True, help="baseline name (baselines/NAME.json) or path")
    c.add_argument("--tolerance", type=tolerance_percent, default=10.0, help="allowed slowdown in percent (default 10)")
    c.add_argument("--accept-test-knobs", action="store_true",
                   help="tests only: judge runs made with test knobs (BENCH_TEST_*) as if they were real")
    c.set_defaults(func=cmd_compare)


def cmd_compare(args: argparse.Namespace) -> int:
    """Print the comparison; return :func:`exit_code`. Bad input raises ValueError (exit 2)."""
    records = read_records(args.results, accept_test_knobs=args.accept_test_knobs)
    baseline = load_baseline(args.baseline)
    comparisons = compare(records, baseline, tolerance_pct=args.tolerance)
    print(format_table(comparisons), end="")
    valid = [r for r in records if r.valid]
    changed = what_changed_by_case(valid, records_of(baseline, f"baseline {baseline.get('name')}")) if valid else \
        ["no valid run now: nothing to compare"]  # (else every fact would read "x -> " as if it had changed)
    if lines := compare_lines(records, baseline, args.tolerance):  # its own verdict, beside the time's
        print("\ninterconnect (bus bandwidth, tolerance as for times):\n" + "\n".join(lines))
    print("\nwhat changed (baseline -> now):\n" + "\n".join(f"  {line}" for line in changed or ["nothing recorded differs"]))
    if args.accept_test_knobs:
        print("note: --accept-test-knobs: runs with test knobs were judged; not a real benchmark")
    return exit_code(comparisons)
