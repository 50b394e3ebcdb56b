"""The sweep's chart: the scaling curve with its ideal line, and where each point's step time goes.

Left: strong scaling draws speedup T1/TN against devices with the ideal (= devices) line; weak
scaling draws throughput per device (images/s) with the ideal (= the 1-device point's, flat)
line. One line per node count; each point is labelled with its efficiency. The x axis is log2
when the device counts double (1, 2, 4, ...). Right: one stacked bar per point, the median step
of the last epoch (ms) split into data wait, compute, exposed all-reduce and loop overhead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

_PARTS = (("data_wait_s", "data wait", "tab:orange"), ("compute_s", "compute", "tab:blue"),
          ("allreduce_s", "all-reduce (exposed)", "tab:red"), ("loop_overhead_s", "loop overhead", "tab:grey"))


def doubles(values: list[int]) -> bool:
    """Whether the distinct values, sorted, each double the previous one (e.g. 1, 2, 4): log2 axis."""
    v = sorted(set(values))
    return len(v) >= 2 and all(b == 2 * a for a, b in zip(v, v[1:]))


def _curve(ax, points: list[dict[str, Any]]) -> None:
    weak = points[0]["scaling"] == "weak"
    key, eff = ("per_device_img_s", "weak_efficiency") if weak else ("speedup", "efficiency")
    devices = sorted({p["devices"] for p in points})
    for nodes in sorted({p["num_nodes"] for p in points}):
        line = [p for p in points if p["num_nodes"] == nodes and p[key] is not None]
        if not line:
            continue
        xs, ys = [p["devices"] for p in line], [p[key] for p in line]
        ax.plot(xs, ys, marker="o", label=f"{nodes} node{'s' if nodes > 1 else ''}")
        for p, x, y in zip(line, xs, ys):
            if p[eff] is not None:
                ax.annotate(f"{p['label']}: {100 * p[eff]:.0f} %", (x, y), textcoords="offset points",
                            xytext=(4, 6), fontsize=8)
    one = next((p[key] for p in points if p["devices"] == 1 and p["num_nodes"] == 1 and p[key]), None)
    ideal = [one] * len(devices) if weak and one else devices if not weak else None
    if ideal:
        ax.plot(devices, ideal, linestyle="--", color="black", linewidth=1, label="ideal")
    if doubles(devices):
        ax.set_xscale("log", base=2)
    ax.set_xticks(devices, [str(d) for d in devices])
    ax.set_xlabel("devices (ranks)")
    ax.set_ylabel("throughput per device (img/s)" if weak else "speedup T1/TN (x)")
    ax.set_title(("Weak scaling: throughput per device" if weak else "Strong scaling: speedup")
                 + " (labels: efficiency)", fontsize=10)
    ax.set_ylim(bottom=0)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no valid run", ha="center", va="center", transform=ax.transAxes)


def _breakdown(ax, points: list[dict[str, Any]]) -> None:
    x = list(range(len(points)))
    bottom = [0.0] * len(points)
    for key, label, color in _PARTS:
        ms = [1000 * (p["breakdown"] or {}).get(key, 0.0) for p in points]
        ax.bar(x, ms, bottom=bottom, label=label, color=color)
        bottom = [b + m for b, m in zip(bottom, ms)]
    ax.set_xticks(x, [f"{p['devices']} ({p['label']})" for p in points], fontsize=8)
    ax.set_xlabel("devices (nodes x per node)")
    ax.set_ylabel("median step, last epoch (ms)")
    ax.set_title("Where the step goes", fontsize=10)
    ax.legend(fontsize=8)


def plot_sweep(points: list[dict[str, Any]], path: Path) -> Path | None:
    """Write the two-panel PNG of one sweep's points to ``path``; None (nothing written) without points.

    Args:
        points: :func:`bench.scaling.figures.summarize` output of one scaling mode (the first point's mode
            decides the left panel).
    """
    if not points:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from bench.core.files import atomic_open

    fig = Figure(figsize=(11, 4.2), dpi=80, layout="constrained")
    FigureCanvasAgg(fig)  # Agg, without pyplot's global state
    ax_curve, ax_bar = fig.subplots(1, 2)
    _curve(ax_curve, points)
    _breakdown(ax_bar, points)
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png")
    return path
