"""Tables of the per-step breakdown (:mod:`bench.measure.breakdown` measures it): pure, without torch.

Kept apart from the measuring callbacks so that ``report`` and ``table`` print breakdowns
without importing torch and Lightning.
"""

from __future__ import annotations

from typing import Any

from bench.core.tables import render

PARTS = ("data_wait_s", "compute_s", "allreduce_s", "loop_overhead_s")  # + unattributed_s = step_s


def rank_breakdowns(result: dict[str, Any]) -> list[dict[str, Any]]:
    """A result's ``metrics.step_breakdown.per_rank`` list ([] when there is none)."""
    return ((result.get("metrics") or {}).get("step_breakdown") or {}).get("per_rank") or []


def format_breakdown(per_rank: list[dict[str, Any]]) -> str:
    """Text table of each rank's last-epoch median step, split into its parts (milliseconds, % of step).

    Args:
        per_rank: ``[{"rank": int, "hostname": str, "epochs": [StepBreakdown.epochs entries]}]``.
    """
    rows = []
    for r in per_rank:
        if not r.get("epochs"):
            continue
        e = r["epochs"][-1]
        step = e["step_s"]["median"]
        cell = lambda k: f"{1000 * e[k]['median']:.2f} ({100 * e[k]['median'] / step if step else 0:.1f}%)"  # noqa: E731
        rows.append([str(r["rank"]), str(r.get("hostname", ""))[:12], f"{1000 * step:.2f}",
                     *(cell(k) for k in PARTS), f"[p90 {1000 * e['step_s']['p90']:.2f}]"])
    if not rows:
        return ""
    head = ("rank", "host", "step ms", "data wait", "compute", "all-reduce", "loop overhead", "")
    # each step's parts add up to that step's time; the medians of the parts need not add up to the median step
    return ("Where the time goes, last epoch, ms (each part's median, % of the median step; need not sum to it):\n"
            + render(head, rows, fmt="plain", align=("right", "left", *["right"] * 5, "left")))


def case_breakdown(result: dict[str, Any]) -> dict[str, float] | None:
    """A result's last-epoch median step and its parts, averaged over the ranks (seconds; pure).

    Returns ``{"ranks": n, "step_s": s, "data_wait_s": s, "compute_s": s, "allreduce_s": s,
    "loop_overhead_s": s}``, or None when the result has no breakdown (turned off, or not ok).
    """
    last = [r["epochs"][-1] for r in rank_breakdowns(result) if r.get("epochs")]
    if not last:
        return None
    mean = lambda key: sum(e[key]["median"] for e in last) / len(last)  # noqa: E731
    return {"ranks": len(last), "step_s": mean("step_s"), **{k: mean(k) for k in PARTS}}


def markdown_breakdown(results: list[dict[str, Any]]) -> list[str]:
    """Markdown table lines, one row per ok result with a breakdown: the median step of its last epoch
    and the parts (milliseconds and % of the step), averaged over the ranks."""
    rows = [(r, b) for r in results if r.get("status") == "ok" and (b := case_breakdown(r))]
    if not rows:
        return []
    cells = []
    for r, b in rows:
        cell = lambda k: f"{1000 * b[k]:.2f} ({100 * b[k] / b['step_s'] if b['step_s'] else 0:.0f} %)"  # noqa: E731
        cells.append([f"{r['case']}{' (profiled)' if r.get('profiled') else ''}", str(b["ranks"]),
                      f"{1000 * b['step_s']:.2f}", *(cell(k) for k in PARTS)])
    head = ("Case", "Ranks", "Step (ms)", "Data wait", "Compute", "All-reduce", "Loop overhead")
    return render(head, cells, fmt="pipe", align=("left", *["right"] * 6)).splitlines()
