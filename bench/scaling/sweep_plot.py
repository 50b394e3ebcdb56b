"""The sweep's chart: the scaling curve with its ideal line, and where each point's step time goes.

Left: strong scaling draws speedup T1/TN against devices with the ideal (= devices) line; weak
scaling draws throughput per device (images/s) with the ideal (= the 1-device point's, flat)
line. One line per node count; each point's error bar spans its repeats (T1 at its median, TN
from the point's fastest to its slowest repeat: the spread a reader must allow for), and each
point is labelled with its efficiency in a box beside it. The x axis is log2 when the device
counts double (1, 2, 4, ...). Right: one stacked bar per point, the median step of the last
epoch (ms) split into data wait, compute, exposed all-reduce and loop overhead. Legends sit under
the axes (they cover no data); the title names the case, preset, scaling mode and the machine, as
the results recorded them (:func:`sweep_title`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

_PARTS = (("data_wait_s", "data wait", "tab:orange"), ("compute_s", "compute", "tab:blue"),
          ("allreduce_s", "all-reduce (exposed)", "tab:red"), ("loop_overhead_s", "loop overhead", "tab:grey"))
ERROR_BAR_LABEL = "error bar: slowest-fastest repeat"


def doubles(values: list[int]) -> bool:
    """Whether the distinct values, sorted, each double the previous one (e.g. 1, 2, 4): log2 axis."""
    v = sorted(set(values))
    return len(v) >= 2 and all(b == 2 * a for a, b in zip(v, v[1:]))


def spread(p: dict[str, Any], key: str) -> tuple[float, float]:
    """(below, above) the point's ``key`` value from its repeats: the figure scales as 1/fit_s for
    fixed work, so the slowest repeat (max fit_s) gives value * median / max, the fastest value * median / min."""
    f, value = p.get("fit_s"), p[key]
    if not f or f.get("n", 1) < 2 or not f.get("min"):
        return 0.0, 0.0
    return value - value * f["median"] / f["max"], value * f["median"] / f["min"] - value


def _curve(ax, points: list[dict[str, Any]]) -> None:
    weak = points[0]["scaling"] == "weak"
    key, eff = ("per_device_img_s", "weak_efficiency") if weak else ("speedup", "efficiency")
    devices = sorted({p["devices"] for p in points})
    for i, nodes in enumerate(sorted({p["num_nodes"] for p in points})):
        line = [p for p in points if p["num_nodes"] == nodes and p[key] is not None]
        if not line:
            continue
        xs, ys = [p["devices"] for p in line], [p[key] for p in line]
        errs = [spread(p, key) for p in line]
        ax.plot(xs, ys, marker="o", label=f"{nodes} node{'s' if nodes > 1 else ''}")
        if any(a or b for a, b in errs):
            shown = ERROR_BAR_LABEL in ax.get_legend_handles_labels()[1]
            ax.errorbar(xs, ys, yerr=[[a for a, _ in errs], [b for _, b in errs]], fmt="none", ecolor="black",
                        capsize=4, label=None if shown else ERROR_BAR_LABEL)
        for p, x, y in zip(line, xs, ys):
            if p[eff] is not None:  # right of the point and below it: clear of the line, which rises; one
                # line of text lower per node count, so that points at the same devices (1x4, 2x2) do not overlap
                ax.annotate(f"{p['label']}: {100 * p[eff]:.0f} %", (x, y), textcoords="offset points",
                            xytext=(8, -14 - 13 * i), fontsize=8, gid="efficiency",
                            bbox={"boxstyle": "round,pad=0.2", "facecolor": "white", "edgecolor": "none", "alpha": 0.8})
    one = next((p[key] for p in points if p["devices"] == 1 and p["num_nodes"] == 1 and p[key]), None)
    ideal = [one] * len(devices) if weak and one else devices if not weak else None
    if ideal:
        ax.plot(devices, ideal, linestyle="--", color="black", linewidth=1, label="ideal")
    if doubles(devices):
        ax.set_xscale("log", base=2)
    ax.set_xticks(devices, [str(d) for d in devices])
    ax.set_xlim(min(devices) / 1.3, max(devices) * 1.5)  # room right of the last point for its label
    ax.set_xlabel("devices (ranks)")
    ax.set_ylabel("throughput per device (img/s)" if weak else "speedup T1/TN (x)")
    ax.set_title(("Weak scaling: throughput per device" if weak else "Strong scaling: speedup")
                 + " (labels: efficiency)", fontsize=10)
    ax.set_ylim(bottom=0, top=max([y for y in [*(ideal or []), *(p[key] or 0 for p in points)]] + [1]) * 1.35)
    if ax.get_legend_handles_labels()[0]:
        _legend_below(ax)
    else:
        ax.text(0.5, 0.5, "no valid run", ha="center", va="center", transform=ax.transAxes)


def _legend_below(ax) -> None:
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, fontsize=8, frameon=False)


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
    _legend_below(ax)


def sweep_title(points: list[dict[str, Any]], results: list[dict[str, Any]] | None = None) -> str:
    """"Strong scaling of ddp, preset smoke, on 2 x AMD EPYC cores (host vm)": case, mode, preset and
    machine (GPU model, else CPU model and the usable cores) from the first result that says."""
    cases = ", ".join(sorted({p["case"] for p in points}))
    text = f"{points[0]['scaling'].capitalize()} scaling of {cases}"
    first = next((r for r in results or [] if r.get("config")), None)
    if first is None:
        return text
    env, preset = first.get("environment") or {}, first["config"].get("preset")
    gpus = env.get("gpu_names")
    machine = (f"{gpus[0]} GPUs" if gpus else
               f"CPU {env.get('cpu_model') or 'unknown'}, usable cores: {env.get('cpus_usable') or env.get('cpu_count') or '?'}")
    hosts = sorted({h for r in results or [] for h in (r.get("world") or {}).get("hostnames") or []})
    return (text + (f", preset {preset}" if preset else "") + f", on {machine}"
            + (f" (hosts: {', '.join(hosts[:4])}{' ...' if len(hosts) > 4 else ''})" if hosts else ""))


def sweep_figure(points: list[dict[str, Any]], title: str):
    """The two-panel Figure of one sweep's points (inspectable: labels, error bars, title)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 5), dpi=80, layout="constrained")
    ax_curve, ax_bar = fig.subplots(1, 2)
    _curve(ax_curve, points)
    _breakdown(ax_bar, points)
    fig.suptitle(title, fontsize=11)
    return fig


def plot_sweep(points: list[dict[str, Any]], path: Path, results: list[dict[str, Any]] | None = None) -> Path | None:
    """Write the two-panel PNG of one sweep's points to ``path``; None (nothing written) without points.

    Args:
        points: :func:`bench.scaling.figures.summarize` output of one scaling mode (the first point's mode
            decides the left panel).
        results: the per-run results the points come from (for the title's preset and machine), or None.
    """
    if not points:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from bench.core.files import atomic_open

    fig = sweep_figure(points, sweep_title(points, results))
    FigureCanvasAgg(fig)  # Agg, without pyplot's global state
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png")
    return path
