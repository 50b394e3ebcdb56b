"""Top operators by self time per rank, read from the profiler's Chrome traces: a table and a picture.

``cifar-bench run --profile`` writes one trace per global rank (:mod:`bench.measure.profiling`);
rank 0 then reads every rank's trace and draws ``<out>/profiles/<run_id>/top_ops.png``: one panel per
rank, its operators with the largest *self* time (time in the operator less the time in operators it
called, so nested operators are not counted twice), in milliseconds per recorded step (the trace's
total over the profiled window / the window's ``ProfilerStep#`` count). Host operators
(``cpu_op``, and ``user_annotation``: Lightning's and the DataLoader's named regions) come from the
host threads; on GPU a second row of panels gives device time per kernel (``kernel``, ``gpu_memcpy``,
``gpu_memset``; kernels do not nest). Collective operators (all-reduce, broadcast, ...) are drawn
in red: see docs/report.md for how their time relates to the breakdown's exposed all-reduce.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

HOST_CATEGORIES = ("cpu_op", "user_annotation")
DEVICE_CATEGORIES = ("kernel", "gpu_memcpy", "gpu_memset")
COLLECTIVE_WORDS = ("allreduce", "all_reduce", "broadcast", "allgather", "all_gather", "reduce_scatter", "nccl", "gloo")
TOP = 12  # operators per panel
NAME_CHARS = 64  # longer names are cut in the middle in the picture (the tables keep them whole)


def self_times(events: Iterable[dict[str, Any]], categories: tuple[str, ...]) -> dict[str, float]:
    """Total self time (microseconds) per operator name of the complete events (``ph == "X"``) in
    ``categories``: each event's ``dur`` less the ``dur`` of the events nested directly in it on the
    same (pid, tid). ``ProfilerStep#N`` (the step wrapper) is left out. Pure; no file access."""
    threads: dict[tuple, list[dict]] = {}
    for e in events:
        if e.get("ph") == "X" and e.get("cat") in categories and not str(e.get("name", "")).startswith("ProfilerStep#"):
            threads.setdefault((e.get("pid"), e.get("tid")), []).append(e)
    totals: dict[str, float] = {}
    for evs in threads.values():
        evs.sort(key=lambda e: (e["ts"], -e.get("dur", 0)))
        stack: list[list] = []  # [end time, name, self time so far]
        for e in evs:
            while stack and stack[-1][0] <= e["ts"]:
                _close(stack.pop(), totals)
            if stack:
                stack[-1][2] -= e.get("dur", 0)
            stack.append([e["ts"] + e.get("dur", 0), e["name"], e.get("dur", 0)])
        while stack:
            _close(stack.pop(), totals)
    return totals


def _close(frame: list, totals: dict[str, float]) -> None:
    totals[frame[1]] = totals.get(frame[1], 0.0) + max(frame[2], 0.0)


def recorded_steps(events: Iterable[dict[str, Any]]) -> int:
    """The number of distinct ``ProfilerStep#N`` regions in a trace (1 when there are none)."""
    return len({e["name"] for e in events if str(e.get("name", "")).startswith("ProfilerStep#")}) or 1


def rank_top_ops(trace: Path, top: int = TOP) -> dict[str, Any]:
    """``{"steps", "host": [(name, ms per step)], "device": [...]}`` of one rank's trace file, largest first."""
    events = json.loads(Path(trace).read_text())["traceEvents"]
    steps = recorded_steps(events)
    ranked = lambda cats: sorted(((n, us / 1000 / steps) for n, us in self_times(events, cats).items()),  # noqa: E731
                                 key=lambda item: -item[1])[:top]
    return {"steps": steps, "host": ranked(HOST_CATEGORIES), "device": ranked(DEVICE_CATEGORIES)}


def short_name(name: str, chars: int = NAME_CHARS) -> str:
    """``name`` cut in the middle to ``chars`` characters (the start and the end say most)."""
    if len(name) <= chars:
        return name
    keep = (chars - 3) // 2
    return name[:keep] + "..." + name[-(chars - 3 - keep):]


def is_collective(name: str) -> bool:
    return any(word in name.lower() for word in COLLECTIVE_WORDS)


def figure(per_rank: list[tuple[int, dict[str, Any]]], title: str):
    """The Figure: one column per rank, host self time on top and, when traced, device time below.

    Args:
        per_rank: (global rank, :func:`rank_top_ops` output) in rank order.
        title: the figure title (the run, its case and window).
    """
    from matplotlib.figure import Figure

    kinds = [k for k in ("host", "device") if any(top[k] for _, top in per_rank)]
    fig = Figure(figsize=(7.5 * len(per_rank), 0.35 * TOP * len(kinds) + 1.5), dpi=90, layout="constrained")
    axes = fig.subplots(len(kinds), len(per_rank), squeeze=False)
    for col, (rank, top) in enumerate(per_rank):
        for row, kind in enumerate(kinds):
            ax, items = axes[row][col], top[kind][::-1]  # largest at the top
            bars = ax.barh([short_name(n) for n, _ in items], [ms for _, ms in items],
                           color=["tab:red" if is_collective(n) else "tab:blue" for n, _ in items])
            ax.bar_label(bars, labels=[f"{ms:.2f}" for _, ms in items], padding=2, fontsize=7)
            ax.margins(x=0.15)  # room for the value labels
            ax.tick_params(axis="y", labelsize=7)
            ax.set_xlabel(f"self time, ms per step (mean of {top['steps']} recorded steps)", fontsize=8)
            ax.set_title(f"rank {rank}: {'host operators' if kind == 'host' else 'device kernels'} by self time",
                         fontsize=9)
    fig.suptitle(title + " (red: collectives)", fontsize=10)
    return fig


def write_chart(traces: list[tuple[int, Path]], path: Path, title: str) -> Path:
    """Read each rank's trace and write :func:`figure` as a PNG to ``path`` (atomically); returns ``path``.

    Raises:
        OSError, ValueError: a trace that cannot be read (e.g. on another node's local disk).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from bench.core.files import atomic_open

    fig = figure([(rank, rank_top_ops(trace)) for rank, trace in traces], title)
    FigureCanvasAgg(fig)
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png")
    return path
