"""Scaling figures of a sweep: strong and weak scaling over world sizes and nodes (pure functions).

A *point* of a sweep is one geometry of one case in one scaling mode: ``(case, scaling, devices,
num_nodes)``, where ``devices`` is the number that splits the work (ddp: the world size, dp: the
GPUs of the node, baseline: 1; :func:`bench.results.records.devices_used`). Repeats of a point are its
runs; points are never pooled with each other.

* **strong** scaling: the same total work at every point (fixed global batch, epochs, images).
  ``speedup = T1 / TN`` and ``efficiency = speedup / N``, where T is the median ``fit_s`` (s) of
  the point and T1 that of the 1-device point of the same sweep (same case and scaling).
* **weak** scaling: the same work *per device* at every point: per-device batch and optimizer
  steps are those of the 1-device point, so the global batch and the images per epoch grow with N
  (:func:`bench.core.config.weak_overrides`). ``weak_efficiency = T1 / TN``; the figure to plot is the throughput per
  device (images/s / N). "Speedup" does not apply, and accuracy is not compared across points
  (each point trains on a different number of images with a different global batch).

Only valid runs are figures: status ``ok``, sanity passed, not profiled (README "Rules").
"""

from __future__ import annotations

import statistics
from typing import Any

from bench.measure.steptable import PARTS, case_breakdown
from bench.results.records import devices_used, problem_of
from bench.results.stats import summary_stats

#: The learning-rate rule of weak scaling (recorded in every sweep summary).
LR_RULE = ("linear scaling (Goyal et al. 2017, 'Accurate, Large Minibatch SGD'): lr = lr_1 x N, where "
           "lr_1 is the learning rate of the 1-device point and N the data-parallel devices; no warm-up")


def is_figure(result: dict[str, Any]) -> bool:
    """Whether a run's times may be used: the one validity rule of :func:`bench.results.records.problem_of`
    (ok, sanity passed, not profiled, no test knob)."""
    return problem_of(result, (result.get("metrics") or {}).get("fit_s")) is None


def point_key(result: dict[str, Any]) -> tuple[str, str, int, int]:
    """``(case, scaling, devices, num_nodes)`` of a per-run result (a missing scaling is "strong")."""
    config, world = result.get("config") or {}, result.get("world") or {}
    nodes = world.get("num_nodes") or config.get("num_nodes") or 1
    return result["case"], config.get("scaling", "strong"), devices_used(result), int(nodes)


def _shares(results: list[dict[str, Any]]) -> dict[str, float] | None:
    """Median over runs of the last-epoch median step and its parts (s), and each part's share of it."""
    parts = [b for r in results if (b := case_breakdown(r))]
    if not parts:
        return None
    med = {k: statistics.median(b[k] for b in parts) for k in ("step_s", *PARTS)}
    return {**med, **{k[:-2] + "_share": (med[k] / med["step_s"] if med["step_s"] else 0.0) for k in PARTS}}


def summarize_point(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One point's figures from the runs (repeats) of one :func:`point_key` (no scaling figures yet).

    Returns a dict with ``case, scaling, devices, num_nodes, label ("NODESxPER_NODE"), runs, valid,
    statuses, hostnames, fit_s ({n, mean, median, stdev, cv, min, max}, s or None),
    throughput_img_s and per_device_img_s (medians, images/s), global/per-device batch,
    optimizer_steps, lr, breakdown`` (see :func:`_shares`).
    """
    case, scaling, devices, nodes = point_key(results[0])
    valid = [r for r in results if is_figure(r)]
    fit = [r["metrics"]["fit_s"] for r in valid]
    thr = [r["metrics"]["throughput_img_s"] for r in valid if r["metrics"].get("throughput_img_s")]
    first = (valid or results)[0]
    world, config = first.get("world") or {}, first.get("config") or {}
    return {
        "case": case, "scaling": scaling, "devices": devices, "num_nodes": nodes,
        "label": f"{nodes}x{devices // nodes if case == 'ddp' else devices}",
        "runs": len(results), "valid": len(valid), "statuses": sorted({r["status"] for r in results}),
        "run_ids": [r.get("run_id") for r in results],
        "hostnames": world.get("hostnames", []),
        "fit_s": {**summary_stats(fit), "min": min(fit), "max": max(fit)} if fit else None,
        "throughput_img_s": statistics.median(thr) if thr else None,
        "per_device_img_s": statistics.median(thr) / devices if thr else None,
        "global_batch_size": config.get("global_batch_size"), "per_device_batch_size": world.get("per_device_batch_size"),
        "train_samples": config.get("train_samples"), "lr": config.get("lr"),
        "optimizer_steps": (first.get("metrics") or {}).get("optimizer_steps"),
        "breakdown": _shares(valid),
    }


def scaling_figures(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add the scaling figures to each point, against the 1-device, 1-node point of its case and mode.

    Strong: ``speedup = T1/TN`` and ``efficiency = speedup/N``; weak: ``weak_efficiency = T1/TN``
    (T: median fit_s). Figures are None where either point has no valid run or no 1-device
    point exists. Returns new dicts, sorted by case, scaling, devices, nodes.
    """
    ref = {(p["case"], p["scaling"]): p["fit_s"]["median"] for p in points
           if p["devices"] == 1 and p["num_nodes"] == 1 and p["fit_s"]}
    out = []
    for p in sorted(points, key=lambda p: (p["case"], p["scaling"], p["devices"], p["num_nodes"])):
        t1, tn = ref.get((p["case"], p["scaling"])), p["fit_s"]["median"] if p["fit_s"] else None
        ratio = t1 / tn if t1 and tn else None
        strong = p["scaling"] == "strong"
        out.append({**p, "speedup": ratio if strong else None,
                    "efficiency": ratio / p["devices"] if strong and ratio else None,
                    "weak_efficiency": None if strong else ratio})
    return out


def summarize(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """All points of a set of per-run results, with their scaling figures (see the module docstring)."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault(point_key(r), []).append(r)
    return scaling_figures([summarize_point(g) for g in groups.values()])


def _num(value: float | None, spec: str, scale: float = 1.0, suffix: str = "") -> str:
    return "-" if value is None else f"{format(value * scale, spec)}{suffix}"


def table_rows(points: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Headers and formatted rows of the sweep table (seconds, images/s, percent of the median step)."""
    headers = ["Case", "Scaling", "Devices", "Nodes x per node", "Valid runs", "Fit (s) median [min-max]", "CV",
               "Throughput (img/s)", "Per device (img/s)", "Speedup", "Efficiency", "Data wait", "Compute",
               "All-reduce", "Hosts"]
    rows = []
    for p in points:
        f, b = p["fit_s"], p["breakdown"] or {}
        eff = p["efficiency"] if p["scaling"] == "strong" else p["weak_efficiency"]
        rows.append([p["case"], p["scaling"], str(p["devices"]), p["label"], f"{p['valid']}/{p['runs']}",
                     f"{f['median']:.2f} [{f['min']:.2f}-{f['max']:.2f}]" if f else "-",
                     _num(f and f["cv"], ".1f", 100, " %"), _num(p["throughput_img_s"], ".0f"),
                     _num(p["per_device_img_s"], ".0f"), _num(p["speedup"], ".2f", suffix="x"),
                     _num(eff, ".0f", 100, " %"), _num(b.get("data_wait_share"), ".0f", 100, " %"),
                     _num(b.get("compute_share"), ".0f", 100, " %"), _num(b.get("allreduce_share"), ".0f", 100, " %"),
                     ",".join(sorted(set(p["hostnames"]))) or "-"])
    return headers, rows


def format_table(points: list[dict[str, Any]], fmt: str = "github") -> str:
    """The sweep table as text (tabulate's ``fmt``: "github" for markdown, "simple" for a terminal)."""
    from tabulate import tabulate

    headers, rows = table_rows(points)
    return tabulate(rows, headers=headers, tablefmt=fmt, disable_numparse=True)
