"""A system's history as series: per system, configuration and case, fit times over time, their change
points explained by what changed, and the newest runs judged against the last stable segment.

Pure functions over :class:`bench.results.records.Record` lists. The grouping is the verdicts'
(:mod:`bench.results.system_groups` "same system", :attr:`Record.group` and
:func:`bench.results.records.split_by_work`): a series never mixes machines or work. Runs that are
no figure (failed, interrupted, sanity-failed, tainted) stay in the series, marked, but never enter
a statistic. Change points are found on fit_s (seconds; the figure the verdicts judge).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.history.changepoints import ChangePoint, Settings, change_points, posterior, segments
from bench.results.baselines import WORK_FIELDS
from bench.results.envdiff import what_changed
from bench.results.power import holm
from bench.results.records import Record, by_group, group_label, split_by_work
from bench.results.stats import MIN_SAMPLES_FOR_TEST, judge, summary_stats
from bench.results.system_groups import split_by_system, system_labels
from bench.results.taint import DEFAULT, RULE_ENV, overridden

SNAP_RUNS = 2  # a change point moves to a recorded change at most this many runs away (runs)
SNAP_ODDS = 0.01  # ... where the place's posterior there is at least this fraction of its peak (odds 1:100)

#: config fields that are no run option worth naming (where files go)
NOT_OPTIONS = {"out_dir", "cache_dir", "data_checksums"}


@dataclass
class Series:
    """One system's runs of one configuration and case, oldest first (``runs``: every run, ``valid``:
    the figures among them). ``points``: change points as indices into ``valid``."""

    label: str
    runs: list[Record]
    valid: list[Record]
    system: str = ""  # the system's label among the history's systems ("" when there is one)
    points: list[ChangePoint] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    newest: dict[str, Any] = field(default_factory=dict)


def started(r: Record) -> str:
    """The run's start time (ISO 8601 UTC; "" unknown): the order of a history."""
    return str(r.result.get("started_utc") or "")


def options_changed(now: list[Record], ref: list[Record]) -> list[str]:
    """Lines "option NAME: REF -> NOW" for run options (config fields that are not work fields, so
    the runs stay comparable) whose values differ between the sides, e.g. ``val_every_n_epochs``."""
    keys = sorted({k for r in [*now, *ref] for k in (r.config or {})} - set(WORK_FIELDS) - NOT_OPTIONS)
    lines = []
    for k in keys:
        a = list(dict.fromkeys(str((r.config or {}).get(k)) for r in ref))
        b = list(dict.fromkeys(str((r.config or {}).get(k)) for r in now))
        if a != b:
            lines.append(f"option {k}: {' | '.join(a)} -> {' | '.join(b)}")
    return lines


def load_changed(now: list[Record], ref: list[Record]) -> list[str]:
    """A line when the machine's load during the fits differs between the sides: the median cores that
    other processes kept busy (``contention.classification.other_busy_cores``, recorded by every run even
    with the contention rule off) moved by more than the taint threshold (:mod:`bench.results.taint`)."""
    def busy(side: list[Record]) -> list[float]:
        return [v for r in side if isinstance(v := ((r.result.get("contention") or {}).get("classification") or {})
                                             .get("other_busy_cores"), (int, float))]

    a, b = busy(ref), busy(now)
    if not a or not b or abs(statistics.median(b) - statistics.median(a)) <= DEFAULT.other_busy_cores:
        return []
    return [f"machine load: other processes kept {statistics.median(a):.2f} -> {statistics.median(b):.2f} cores "
            "busy during the fit (median; contention, bench/results/taint.py)"]


def _median(values: list[float]) -> float:
    return summary_stats(values)["median"]


def _step(s: Series, cp: ChangePoint, bounds: list[tuple[int, int]], i: int) -> dict[str, Any]:
    """A change point's facts: the segments before and after it, their medians, what differs."""
    (a, b), (c, d) = bounds[i], bounds[i + 1]
    before, after = s.valid[a:b], s.valid[c:d]
    return {"index": cp.index, "run_number": next(i for i, r in enumerate(s.runs) if r is after[0]) + 1,
            "run_id": after[0].run_id, "started_utc": started(after[0]), "p_value": cp.p_value,
            "median_before_s": _median([r.fit_s for r in before]), "median_after_s": _median([r.fit_s for r in after]),
            "ratio": _median([r.fit_s for r in after]) / _median([r.fit_s for r in before]),
            "what_changed": what_changed(after, before) + options_changed(after, before) + load_changed(after, before)}


def recorded_changes(runs: list[Record]) -> list[int]:
    """Indices i (0 < i < len) where a recorded fact differs between ``runs[i - 1]`` and ``runs[i]``
    (versions, image, commit, nodes, system and work fields, run options; not the machine load)."""
    return [i for i in range(1, len(runs))
            if what_changed(runs[i:i + 1], runs[i - 1:i]) or options_changed(runs[i:i + 1], runs[i - 1:i])]


def snap(points: list[ChangePoint], runs: list[Record], min_size: int) -> list[ChangePoint]:
    """Each change point moved to the recorded change (:func:`recorded_changes`) within :data:`SNAP_RUNS`
    runs of it, where there is exactly one, the move keeps every segment >= ``min_size`` runs, and the
    numbers do not speak against it: the posterior of the step's place
    (:func:`bench.history.changepoints.posterior`, over the runs between the neighbouring change points)
    is at least :data:`SNAP_ODDS` of its peak there. Why: a step caused by an update starts at the
    update's first run, and from the numbers alone a 2-SD step lands more than one run off in about 1
    series in 8; a step placed off names the wrong facts or none. A sharp step is not moved onto an
    unrelated change beside it (its posterior there is far below the peak)."""
    changes = recorded_changes(runs)
    values = np.array([r.fit_s for r in runs], dtype=float)
    out = list(points)
    for i, cp in enumerate(out):
        start = out[i - 1].index if i else 0
        end = out[i + 1].index if i + 1 < len(out) else len(runs)
        near = [j for j in changes if abs(j - cp.index) <= SNAP_RUNS]
        if len(near) != 1 or near[0] == cp.index or not start + min_size <= near[0] <= end - min_size:
            continue
        t, p = posterior(values[start:end], min_size)
        if p[near[0] - start - int(t[0])] >= SNAP_ODDS * p.max():
            out[i] = ChangePoint(near[0], cp.p_value, cp.q)
    return out


def _newest(s: Series, tol: float) -> tuple[list[float], list[float], dict[str, Any]]:
    """The newest MIN_SAMPLES_FOR_TEST figures and the last stable segment before them (the runs since
    the last change point before the newest ones)."""
    k = MIN_SAMPLES_FOR_TEST
    n = len(s.valid)
    start = max([0] + [c.index for c in s.points if c.index <= n - k - 1])
    now, ref = [r.fit_s for r in s.valid[n - k:]], [r.fit_s for r in s.valid[start:n - k]]
    info = {"runs": [r.run_id for r in s.valid[n - k:]], "reference_runs": [r.run_id for r in s.valid[start:n - k]],
            "tolerance_pct": tol}
    return now, ref, info


def build(records: list[Record], tol: float = 10.0, settings: Settings = Settings()) -> list[Series]:
    """Every series of ``records`` with change points, steps and the newest runs' verdict.

    The newest verdicts of all series are one family: their p-values are Holm-adjusted together
    (:func:`bench.results.power.holm`), as ``compare`` does over its cases.
    """
    out: list[Series] = []
    labels = system_labels(records)
    for subset, system in split_by_system(records, labels):
        for group, runs in by_group(subset).items():
            if all(r.status == "skipped" for r in runs):
                continue  # a case this machine cannot run (e.g. dp without GPUs): no history
            for work, work_label in split_by_work(runs):
                work = sorted(work, key=lambda r: (started(r), r.run_id))
                label = " ".join(x for x in (system, group_label(group), work_label) if x)
                out.append(Series(label, work, [r for r in work if r.valid], system))
    judged = []
    for s in out:
        values = [r.fit_s for r in s.valid]
        s.points = snap(change_points(values, settings), s.valid, settings.min_size) if values else []
        bounds = segments(len(values), s.points)
        s.steps = [_step(s, cp, bounds, i) for i, cp in enumerate(s.points)]
        if len(values) >= 2 * MIN_SAMPLES_FOR_TEST:
            judged.append((s, *_newest(s, tol)))
        else:
            s.newest = {"verdict": "inconclusive", "notes": [
                f"{len(values)} valid run(s): the newest {MIN_SAMPLES_FOR_TEST} are judged against "
                f"{MIN_SAMPLES_FOR_TEST} or more before them"]}
    from bench.results.stats import welch_log_p

    adjusted = holm([welch_log_p(now, ref) if min(len(now), len(ref)) >= MIN_SAMPLES_FOR_TEST else 1.0
                     for _, now, ref, _ in judged])
    for (s, now, ref, info), p in zip(judged, adjusted):
        v = judge(now, ref, tol, p_value=p, tests=len(judged))
        off = sum(overridden(r.result or {}) for r in s.valid[-len(now) - len(ref):])
        s.newest = {**info, "verdict": v.verdict, "p_value": v.p_value, "ratio": _median(now) / _median(ref),
                    "detectable_pct": v.detectable_pct, "notes": list(v.notes) + ([
                        f"{off} of these runs were tainted by a contended machine but kept as figures: their "
                        f"contention rule was off ({RULE_ENV}=off)"] if off else []),
                    "what_changed": [] if v.verdict == "unchanged" else
                    what_changed(s.valid[-len(now):], s.valid[-len(now) - len(ref):-len(now)])}
    return out


def as_json(series: list[Series]) -> list[dict[str, Any]]:
    """The series as plain data for tools (the ``--json`` output)."""
    return [{"series": s.label, "runs": [
        {"run_id": r.run_id, "started_utc": started(r), "status": r.status, "fit_s": r.fit_s,
         "throughput_img_s": r.throughput_img_s, "valid": r.valid, "problem": r.problem,
         "host": ",".join((r.world or {}).get("hostnames") or [])} for r in s.runs],
        "change_points": s.steps, "newest": s.newest} for s in series]
