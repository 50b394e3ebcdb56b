"""The interconnect check in the analysis commands: a line per run (``table``, ``report``) and the
interconnect verdict of each group of runs beside the time verdict (``compare``).

Kept apart from :mod:`bench.results.interconnect` because it groups records (:mod:`bench.results.records`
reads baseline files, whose recording uses :mod:`bench.results.interconnect`).
"""

from __future__ import annotations

from bench.results.interconnect import describe, measured, summarise, verdict
from bench.results.records import group_label


def compare_lines(records: list, baseline: dict, tolerance_pct: float) -> list[str]:
    """The interconnect verdict of each group of valid current records (:class:`bench.results.records.Record`)
    that measured the check, against the baseline file's entry of its case; [] when no record measured it."""
    groups: dict[tuple, list] = {}
    for r in records:
        if r.valid and measured(r.result):
            groups.setdefault(r.group, []).append(r)
    lines = []
    for group, runs in groups.items():
        entry = (baseline.get("cases") or {}).get(runs[0].case)
        if entry is None:
            continue  # the time table already says "no baseline"
        now = summarise([measured(r.result) for r in runs])
        judged = verdict(now, entry.get("interconnect"), tolerance_pct, runs[0].environment, entry.get("environment"))
        lines.append(f"  {group_label(group)}: {judged['text']}")
    return lines


def record_lines(records: list) -> list[str]:
    """One line per run that measured the check (``table``, ``report``): :func:`describe`."""
    return [f"  {r.run_id}: {describe(measured(r.result))}" for r in records if measured(r.result)]
