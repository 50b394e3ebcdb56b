"""The parity benchmark's figures (:mod:`bench.parity`), pure functions over its runs: per-round
ratios, their median and bootstrap confidence interval, the same-work check and the printed table.

A run is ``{"side", "round", "optimizer_steps", "test_accuracy", "throughput_img_s",
"median_step_img_s", ...}``; a speed of None (e.g. images/s of sides run in turns) gives no ratio.
"""

from __future__ import annotations

from typing import Any

import numpy as np

ALL_SIDES = ("hand", "lightning", "product", "product_before")  # product_before: only with --before-tree
TARGETS = {"product/lightning": 0.97, "product/hand": 0.90}  # issue 14: the harness's own cost
RATIOS = ("product/lightning", "product/hand", "product_before/lightning", "product_before/hand", "product/product_before")


def ratio_summary(ratios: list[float], confidence: float = 0.95) -> dict[str, Any]:
    """Median of per-round ratios and its bootstrap confidence interval (pure; seeded resampling).

    Returns ``{"n", "median", "low", "high"}``; low/high are None for fewer than 2 ratios and equal
    to the median when all ratios are equal.
    """
    from scipy.stats import bootstrap

    values = np.asarray(ratios, dtype=float)
    out: dict[str, Any] = {"n": len(values), "median": float(np.median(values)) if len(values) else None,
                           "low": None, "high": None}
    if len(values) < 2:
        return out
    if np.all(values == values[0]):
        out["low"] = out["high"] = float(values[0])
        return out
    ci = bootstrap((values,), np.median, confidence_level=confidence, method="percentile",
                   n_resamples=9999, random_state=0).confidence_interval
    out["low"], out["high"] = float(ci.low), float(ci.high)
    return out


def same_work(runs: list[dict[str, Any]], accuracy_tolerance: float) -> list[str]:
    """Why the runs of one data path did not do the same work ([] = they did; pure).

    Args:
        runs: ``{"side", "round", "optimizer_steps", "test_accuracy"}`` per run.
        accuracy_tolerance: largest allowed distance of a run's test accuracy from the median (fraction).
    """
    problems = []
    steps = {r["optimizer_steps"] for r in runs}
    if len(steps) > 1:
        problems.append(f"optimizer steps differ: {sorted(steps)}")
    accs = [r["test_accuracy"] for r in runs if r.get("test_accuracy") is not None]
    if len(accs) != len(runs):
        problems.append("a run has no test accuracy")
    elif accs:
        mid = float(np.median(accs))
        far = [r for r in runs if abs(r["test_accuracy"] - mid) > accuracy_tolerance]
        problems += [f"{r['side']} (round {r['round']}) accuracy {r['test_accuracy']:.4f} is more than "
                     f"{accuracy_tolerance:.3f} from the median {mid:.4f}" for r in far]
    return problems


def _ratios(runs: list[dict[str, Any]], key: str) -> dict[str, dict[str, Any]]:
    """Per ratio of :data:`RATIOS`: the per-round ratios of ``key`` (a speed) and their summary."""
    rounds = sorted({r["round"] for r in runs})
    by = {(r["round"], r["side"]): r[key] for r in runs if r.get(key)}
    pairs = [(name.split("/")[0], name.split("/")[1]) for name in RATIOS]
    ratios = {f"{a}/{b}": [by[(i, a)] / by[(i, b)] for i in rounds if (i, a) in by and (i, b) in by] for a, b in pairs}
    return {name: {**ratio_summary(v), "samples": v, "target": TARGETS.get(name)} for name, v in ratios.items() if v}


def _medians(runs: list[dict[str, Any]], key: str) -> dict[str, float]:
    return {s: float(np.median(values)) for s in ALL_SIDES
            if (values := [r[key] for r in runs if r["side"] == s and r.get(key)])}


def summarize(runs: list[dict[str, Any]], accuracy_tolerance: float) -> dict[str, Any]:
    """Per-path figures from runs of one data path: throughput medians, ratio summaries, same-work check.

    Two measures of speed, each paired within rounds: ``ratios`` of the throughput (training images /
    training seconds, the product's ``throughput_img_s``) and ``step_ratios`` of the images per median
    step (``median_step_img_s``: a median ignores the bursts of other load that move a mean).
    """
    return {"throughput_img_s": _medians(runs, "throughput_img_s"),
            "ratios": _ratios(runs, "throughput_img_s"),
            "median_step_img_s": _medians(runs, "median_step_img_s"),
            "step_ratios": _ratios(runs, "median_step_img_s"),
            "optimizer_steps": sorted({r["optimizer_steps"] for r in runs}),
            "test_accuracy": {s: [r["test_accuracy"] for r in runs if r["side"] == s] for s in ALL_SIDES},
            "same_work_problems": same_work(runs, accuracy_tolerance)}


def format_report(summary: dict[str, dict[str, Any]]) -> str:
    """One table: per data path and ratio, the median throughputs, the ratio's median and 95 % CI and its target."""
    from tabulate import tabulate

    rows = []
    for path, s in summary.items():
        for measure, speeds, ratios in (("images/s", s["throughput_img_s"], s["ratios"]),
                                        ("median step", s.get("median_step_img_s", {}), s.get("step_ratios", {}))):
            for name, r in ratios.items():
                a, b = name.split("/")
                ci = f"[{r['low']:.3f}, {r['high']:.3f}]" if r["low"] is not None else "-"
                met = ("" if r["target"] is None else "-" if r["n"] < 3  # too few pairs to say
                       else "yes" if r["median"] >= r["target"] else "NO")
                rows.append([path, measure, name, f"{speeds[a]:.0f} / {speeds[b]:.0f}", r["n"], f"{r['median']:.3f}", ci,
                             r["target"] or "", met, "yes" if not s["same_work_problems"] else "NO"])
    head = ["data path", "measure", "ratio", "median images/s", "pairs", "median ratio", "95% CI", "target", "met",
            "same work"]
    lines = [tabulate(rows, headers=head)]
    for path, s in summary.items():
        lines += [f"{path}: {p}" for p in s["same_work_problems"]]
    return "\n".join(lines)
