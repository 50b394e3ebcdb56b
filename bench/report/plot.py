"""The report's figure: training time per row (beside the baseline file's, with its verdict) and speedup.

:func:`figure` builds it (a matplotlib Figure, inspectable in tests: series labels, titles, texts);
:func:`render_png` draws it to PNG bytes. Left panel: each row's median ``fit_s`` with an error bar
from the minimum to the maximum of its repeats (said in the legend; no bar for one run), and, with
``--baseline``, the baseline file's median beside it and the comparison's verdict above the pair.
Right panel: speedup over the ``baseline`` case with the ideal (= devices) marked. The title line
gives what ran (preset, model, data kind, cores/GPUs) as the results recorded it.
"""

from __future__ import annotations

import io
from typing import Any

from bench.core.tables import fmt_seconds
from bench.results.records import group_label

RUNS_COLOR, BASE_COLOR = "tab:blue", "tab:grey"


def _time_panel(ax, rows: list[dict], comparisons: list | None, baseline_name: str | None) -> None:
    by_label = {c.label: c for c in comparisons or []}
    width = 0.4 if comparisons is not None else 0.8
    x = [i - (width / 2 if comparisons is not None else 0) for i in range(len(rows))]
    times = [r["fit_s"] for r in rows]
    low = [t - min(r["samples"]) for t, r in zip(times, rows)]
    high = [max(r["samples"]) - t for t, r in zip(times, rows)]
    spread = any(len(r["samples"]) > 1 for r in rows)
    n = "/".join(sorted({str(len(r["samples"])) for r in rows}))
    bars = ax.bar(x, times, width, color=RUNS_COLOR, label=f"these runs: median fit_s (n={n})")
    _base_labels(ax, x, times)
    if spread:
        ax.errorbar(x, times, yerr=[low, high], fmt="none", ecolor="black", capsize=4,
                    label="error bar: min-max of the repeats")
    tops = [t + h for t, h in zip(times, high)]
    if comparisons is not None:
        base = [getattr(by_label.get(group_label(r["group"])), "fit_s_baseline", None) for r in rows]
        xb = [i + width / 2 for i in range(len(rows))]
        drawn = [(xi, b) for xi, b in zip(xb, base) if b is not None]
        if drawn:
            bars = ax.bar([d[0] for d in drawn], [d[1] for d in drawn], width, color=BASE_COLOR,
                          label=f"baseline {baseline_name or ''}: median fit_s".replace("  ", " "))
            _base_labels(ax, [d[0] for d in drawn], [d[1] for d in drawn])
        for i, row in enumerate(rows):
            c = by_label.get(group_label(row["group"]))
            top = max(tops[i], base[i] or 0.0)
            ax.annotate(_verdict_text(c), (i, top), xytext=(0, 14), textcoords="offset points", ha="center",
                        fontsize=8, fontweight="bold", gid="verdict")
        tops += [b or 0.0 for b in base]
    ax.set_ylim(0, max(tops) * 1.3)
    _legend_below(ax)


def _base_labels(ax, x: list[float], seconds: list[float]) -> None:
    """Each bar's time written at its foot, inside it: clear of the error bar, which is near the top."""
    for xi, t in zip(x, seconds):
        ax.annotate(fmt_seconds(t), (xi, 0), xytext=(0, 3), textcoords="offset points", ha="center", va="bottom",
                    color="white", fontsize=8, fontweight="bold")


def _legend_below(ax) -> None:
    """The legend under the axes, so that it covers no bar whatever the bars' heights."""
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, fontsize=8, frameon=False)


def _verdict_text(c: Any) -> str:
    """The verdict over a row's bars: "ok, +3.1%", or the verdict alone when no time change was judged."""
    if c is None:
        return "not in the comparison"
    return f"{c.verdict}, {c.diff_pct:+.1f}%" if c.basis == "time" and c.diff_pct is not None else c.verdict


def _speedup_panel(ax, rows: list[dict]) -> None:
    x = list(range(len(rows)))
    speed = [r["speedup"] or 0.0 for r in rows]
    bars = ax.bar(x, speed, color="tab:green", label="speedup")
    ax.bar_label(bars, labels=["-" if r["speedup"] is None else f"{r['speedup']:.2f}x" for r in rows], padding=2)
    ax.scatter(x, [r["devices"] for r in rows], marker="_", s=900, linewidths=2.5, color="tab:red",
               zorder=3, label="ideal (= devices)")
    ax.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
    _legend_below(ax)
    ax.set_ylim(0, max(speed + [r["devices"] for r in rows]) * 1.3)


def figure(rows: list[dict], comparisons: list | None = None, baseline_name: str | None = None,
           title: str | None = None):
    """The two-panel Figure of :func:`bench.report.caserows.case_rows`' rows (in drawing order).

    Args:
        rows: rows with ``configuration``, ``group``, ``fit_s`` (s), ``samples`` (s), ``speedup``, ``devices``.
        comparisons: :func:`bench.results.compare.compare` rows (``label``, ``fit_s_baseline``, ``verdict``,
            ``diff_pct``, ``basis``), or None without ``--baseline``.
        baseline_name: the baseline file's name, for the legend.
        title: the figure's title line (what ran), or None.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 5), dpi=100, layout="constrained")
    ax_t, ax_s = fig.subplots(1, 2)
    labels = [r["configuration"].replace(", ", ",\n", 1) for r in rows]
    if rows:
        _time_panel(ax_t, rows, comparisons, baseline_name)
        _speedup_panel(ax_s, rows)
    else:
        for ax in (ax_t, ax_s):
            ax.text(0.5, 0.5, "no case finished ok", ha="center", va="center", transform=ax.transAxes)
    time_title = "Training time (median fit_s)" + (" vs the baseline file, with verdicts" if comparisons is not None else "")
    for ax, name, ylabel in ((ax_t, time_title, "seconds"), (ax_s, "Speedup over the baseline case", "speedup (x)")):
        ax.set_title(name, fontsize=10)
        ax.set_ylabel(ylabel)
        ax.set_xticks(list(range(len(rows))), labels, fontsize=8)
        ax.set_xlim(-0.75, max(len(rows), 2) - 0.25)  # a lone row is not one bar the panel's width
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def render_png(rows: list[dict], comparisons: list | None = None, baseline_name: str | None = None,
               title: str | None = None) -> bytes:
    """:func:`figure` as PNG bytes (Agg, without pyplot's global state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = figure(rows, comparisons, baseline_name, title)
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
