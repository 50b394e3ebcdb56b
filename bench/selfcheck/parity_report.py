"""The parity benchmark's figures (:mod:`bench.selfcheck.parity`), pure functions over its runs: per-round
ratios, their median and bootstrap confidence interval, the same-work check and the printed table.

A run is ``{"side", "round", "optimizer_steps", "test_accuracy", "throughput_img_s",
"median_step_img_s", ...}``; a speed of None (e.g. images/s of sides run in turns) gives no ratio.
"""

from __future__ import annotations

import math

from typing import Any

import numpy as np

ALL_SIDES = ("hand", "lightning", "product", "product_before")  # product_before: only with --before-tree
TARGETS = {"product/lightning": 0.97, "product/hand": 0.90}  # issue 14: the harness's own cost
# Sides in turns: each turn has one step that spans the other sides' turns; with >= 50 steps a turn
# that is <= 2 % of the steps, which moves a median by at most about one percentile.
MIN_STEPS_PER_TURN = 50
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


def turn_problems(runs: list[dict[str, Any]], slice_s: float) -> list[str]:
    """Why the runs give no median-step figure ([] = fine; pure): runs of fewer than
    :data:`MIN_STEPS_PER_TURN` steps in all (in either mode), or, in turns of ``slice_s`` seconds, a
    slowest median step that leaves fewer than that many steps a turn."""
    timed = [r for r in runs if r.get("median_step_s")]
    if not timed:
        return []
    fewest = min(r.get("optimizer_steps", MIN_STEPS_PER_TURN) for r in timed)
    if fewest < MIN_STEPS_PER_TURN:  # a median of so few steps is mostly start-up, and no --slice-s can help
        return [f"the runs have {fewest} steps in all, fewer than {MIN_STEPS_PER_TURN}: too few for a figure; train "
                f"at least {MIN_STEPS_PER_TURN} steps (--train-samples of at least {MIN_STEPS_PER_TURN} x the global "
                f"batch, or more --epochs)"]
    slowest = max(timed, key=lambda r: r["median_step_s"])
    steps = slice_s / slowest["median_step_s"] if slice_s > 0 else math.inf
    if steps >= MIN_STEPS_PER_TURN:
        return []
    need = MIN_STEPS_PER_TURN * slowest["median_step_s"]
    return [f"{slowest['side']} (round {slowest['round']}): a median step of {1000 * slowest['median_step_s']:.1f} ms "
            f"fits {steps:.1f} steps in a turn of {slice_s:g} s, fewer than {MIN_STEPS_PER_TURN}, so the steps that span "
            f"other sides' turns move the median; use --slice-s {need:.1f} or more (make parity SLICE_S={need:.1f})"]


def summarize(runs: list[dict[str, Any]], accuracy_tolerance: float, slice_s: float = 0.0) -> dict[str, Any]:
    """Per-path figures from runs of one data path: throughput medians, ratio summaries, same-work and
    step-count checks (:func:`turn_problems`; sides in turns of ``slice_s`` seconds, 0 = one after the other).

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
            "same_work_problems": same_work(runs, accuracy_tolerance),
            "turn_problems": turn_problems(runs, slice_s)}


def format_report(summary: dict[str, dict[str, Any]]) -> str:
    """One table: per data path, measure and ratio, the sides' median speeds (images/s over epochs, or at
    the median step), the ratio's median and 95 % CI and its target; "met" is "-" with fewer than 3 pairs
    or when :func:`turn_problems` gives no median-step figure (then said below the table)."""
    from tabulate import tabulate

    rows = []
    for path, s in summary.items():
        for measure, speeds, ratios in (("over epochs", s["throughput_img_s"], s["ratios"]),
                                        ("median step", s.get("median_step_img_s", {}), s.get("step_ratios", {}))):
            for name, r in ratios.items():
                a, b = name.split("/")
                ci = f"[{r['low']:.3f}, {r['high']:.3f}]" if r["low"] is not None else "-"
                no_figure = r["n"] < 3 or (measure == "median step" and s.get("turn_problems"))
                met = "" if r["target"] is None else "-" if no_figure else "yes" if r["median"] >= r["target"] else "NO"
                rows.append([path, measure, name, f"{speeds[a]:.0f} / {speeds[b]:.0f}", r["n"], f"{r['median']:.3f}", ci,
                             r["target"] or "", met, "yes" if not s["same_work_problems"] else "NO"])
    head = ["data path", "measure", "ratio", "median images/s", "pairs", "median ratio", "95% CI", "target", "met",
            "same work"]
    lines = [tabulate(rows, headers=head)]
    for path, s in summary.items():
        lines += [f"{path}: {p}" for p in s["same_work_problems"] + s.get("turn_problems", [])]
    return "\n".join(lines)
