"""The report's figure: training time per case and speedup with the ideal (= devices) marked."""

from __future__ import annotations

import io

from bench.core.tables import fmt_seconds


def render_png(rows: list[dict]) -> bytes:
    """The two-panel figure (PNG bytes): training time per case, speedup with the ideal (= devices).

    Args:
        rows: :func:`bench.report.caserows.case_rows`' rows (``configuration``, ``fit_s`` s, ``stats``,
            ``speedup``, ``devices``), in the order to draw.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.5), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)  # Agg, without pyplot's global state
    ax_t, ax_s = fig.subplots(1, 2)
    labels = [r["configuration"].replace(", ", ",\n", 1) for r in rows]
    x = list(range(len(rows)))
    if rows:
        times = [r["fit_s"] for r in rows]
        errs = [r["stats"]["stdev"] or 0.0 for r in rows]
        bars = ax_t.bar(x, times, yerr=errs if any(errs) else None, capsize=4, color="tab:blue")
        ax_t.bar_label(bars, labels=[fmt_seconds(t) for t in times], padding=2)
        speed = [r["speedup"] or 0.0 for r in rows]
        bars = ax_s.bar(x, speed, color="tab:green", label="speedup")
        ax_s.bar_label(bars, labels=["-" if r["speedup"] is None else f"{r['speedup']:.2f}x" for r in rows],
                       padding=2)
        ax_s.scatter(x, [r["devices"] for r in rows], marker="_", s=900, linewidths=2.5, color="tab:red",
                     zorder=3, label="ideal (= devices)")
        ax_s.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
        ax_s.legend(loc="upper left")
        ax_s.set_ylim(0, max(speed + [r["devices"] for r in rows]) * 1.2)
        ax_t.set_ylim(0, max(t + e for t, e in zip(times, errs)) * 1.15)
    else:
        for ax in (ax_t, ax_s):
            ax.text(0.5, 0.5, "no case finished ok", ha="center", va="center", transform=ax.transAxes)
    for ax, title, ylabel in ((ax_t, "Training time (median fit_s)", "seconds"),
                              (ax_s, "Speedup over the baseline case", "speedup (x)")):
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        ax.set_xticks(x, labels, fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
