"""The history page's scaling curves: per system, the speedup of each configuration as it stands now.

"Now" is each series' newest stable segment: the valid runs after its last change point (at most
:data:`NEWEST` of them), so a step three updates ago does not mix old and new times into one point.
One work set per configuration and case (the series whose newest run is the newest: the one still
run). Speedup and scaling efficiency are the report's (:func:`bench.report.caserows.case_rows`):
fit_s(baseline) / fit_s(configuration) against the ``baseline`` case of the same system and work,
efficiency = speedup / devices. A curve is drawn when at least two configurations with different
device counts have a speedup (a ``make bench`` history: baseline and ddp; a sweep: every point).
"""

from __future__ import annotations

import io
from typing import Any

from bench.history.changepoints import segments
from bench.history.series import Series, started
from bench.report.caserows import case_rows
from bench.results.records import Record

NEWEST = 10  # runs at most per configuration (the newest of its last segment)


def current_runs(series: list[Series]) -> dict[str, list[Record]]:
    """Per system label: the valid runs of each configuration's newest segment (see the module docstring)."""
    newest: dict[tuple[str, tuple], Series] = {}
    for s in series:
        if not s.valid:
            continue
        key = (s.system, s.valid[-1].group)
        if key not in newest or started(s.valid[-1]) > started(newest[key].valid[-1]):
            newest[key] = s
    out: dict[str, list[Record]] = {}
    for (system, _), s in newest.items():
        start, end = segments(len(s.valid), s.points)[-1]
        out.setdefault(system, []).extend(s.valid[max(start, end - NEWEST):end])
    return out


def scaling_rows(series: list[Series]) -> list[tuple[str, list[dict[str, Any]], list[str]]]:
    """``(system, rows, notes)`` for each system with a curve to draw: rows of :func:`case_rows` that
    have a speedup, by devices; notes say why a configuration has none (e.g. different work)."""
    out = []
    for system, runs in current_runs(series).items():
        try:
            rows, _, notes = case_rows(runs)
        except ValueError as err:  # valid runs of one configuration that did different work
            out.append((system, [], [str(err)]))
            continue
        rows = sorted((r for r in rows if r["speedup"]), key=lambda r: (r["devices"], r["nodes"], r["case"]))
        if len({r["devices"] for r in rows}) >= 2:
            out.append((system, rows, notes))
    return out


def curve_svg(rows: list[dict[str, Any]], index: int) -> str:
    """Speedup against devices with the ideal (= devices) line, each point labelled with its efficiency
    (inline SVG, text as paths; the points in the SVG group ``scaling-points-N``)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 3.8), dpi=100, layout="constrained")
    ax = fig.subplots()
    devices = [r["devices"] for r in rows]
    top = max(devices)
    ax.plot([1, top], [1, top], "--", color="grey", lw=1, label="ideal (speedup = devices)")
    ax.plot(devices, [r["speedup"] for r in rows], "o", color="tab:green", ms=7, gid=f"scaling-points-{index}",
            label="speedup = fit_s(baseline) / fit_s")
    for r in rows:
        ax.annotate(f"{r['efficiency']:.0%}", (r["devices"], r["speedup"]), textcoords="offset points",
                    xytext=(6, -12), fontsize=8)
    ax.set_xlabel("devices (labels: scaling efficiency)")
    ax.set_ylabel("speedup")
    ax.set_xticks(sorted(set(devices)))
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue()
    return text[text.index("<svg"):]
