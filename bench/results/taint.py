"""Was a run's machine contended? The clean / tainted classification of two contention readings.

A pure function over the readings :func:`bench.measure.contention.reading` takes at the start and the
end of the fit (plain dicts; counters are cumulative, so the fit's share is end - start). A tainted run
stays a result and is shown as tainted, but it is never a figure: ``compare`` never judges it and
``baseline record`` never records it (:func:`taint_problem`, used by :mod:`bench.results.records`).
The rule can be switched off per run (``BENCH_CONTENTION_RULE=off``, recorded in the result as
``contention.rule``), e.g. on a busy CI machine that still runs the verdict tests. Thresholds and the
measurements that chose them: docs/comparison.md ("Contention").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

RULE_ENV = "BENCH_CONTENTION_RULE"  # "off": classify and record, but do not exclude tainted runs
BUSY = ("user", "nice", "system", "irq", "softirq")  # /proc/stat columns that are CPU work (guest is in user)


@dataclass(frozen=True)
class Thresholds:
    """Beyond any of these the run is tainted."""

    other_busy_cores: float = 0.5  # cores, mean over the fit, busy with processes not of this run
    steal_fraction: float = 0.05  # of the node's CPU time, taken by the hypervisor
    throttled_fraction: float = 0.10  # of the cgroup's quota periods, throttled
    gpu_other_processes: int = 0  # processes of others on the run's GPUs
    #: NVML throttle reasons that mean a slowed GPU (HW slowdown 0x8, SW thermal 0x20, HW thermal 0x40,
    #: HW power brake 0x80); idle (0x1), application clocks (0x2) and the power cap (0x4) are normal
    gpu_throttle_mask: int = 0x8 | 0x20 | 0x40 | 0x80


DEFAULT = Thresholds()


def classify(start: dict | None, end: dict | None, limits: Thresholds = DEFAULT) -> dict[str, Any]:
    """Classify a fit from its two readings.

    Returns:
        ``{"state": "clean" | "tainted" | "not measured", "reasons": [str], "other_busy_cores": float | None,
        "steal_fraction": float | None, "throttled_fraction": float | None}``. "not measured" when the
        node's CPU counters or the run's own CPU time are missing from a reading (no /proc).
    """
    out: dict[str, Any] = {"state": "not measured", "reasons": [], "other_busy_cores": None,
                           "steal_fraction": None, "throttled_fraction": None}
    if not start or not end or not start.get("cpu") or not end.get("cpu") or start.get("own_cpu_s") is None \
            or end.get("own_cpu_s") is None or not end.get("clk_tck") or end["t_s"] <= start["t_s"]:
        return out
    d = {k: end["cpu"][k] - start["cpu"][k] for k in end["cpu"]}
    wall, tck = end["t_s"] - start["t_s"], end["clk_tck"]
    busy_s = sum(d.get(k, 0) for k in BUSY) / tck
    out["other_busy_cores"] = max(0.0, busy_s - (end["own_cpu_s"] - start["own_cpu_s"])) / wall
    total = sum(d.values())
    out["steal_fraction"] = d.get("steal", 0) / total if total > 0 else 0.0
    reasons = out["reasons"]
    if out["other_busy_cores"] > limits.other_busy_cores:
        reasons.append(f"other processes kept {out['other_busy_cores']:.2f} cores busy during the fit "
                       f"(limit {limits.other_busy_cores:g})")
    if out["steal_fraction"] > limits.steal_fraction:
        reasons.append(f"CPU steal {out['steal_fraction']:.1%} of the node's time (limit {limits.steal_fraction:.0%})")
    a, b = start.get("cgroup"), end.get("cgroup")
    if a and b and b["nr_periods"] > a["nr_periods"]:
        out["throttled_fraction"] = (b["nr_throttled"] - a["nr_throttled"]) / (b["nr_periods"] - a["nr_periods"])
        if out["throttled_fraction"] > limits.throttled_fraction:
            reasons.append(f"cgroup CPU quota throttled {out['throttled_fraction']:.0%} of periods "
                           f"(limit {limits.throttled_fraction:.0%})")
    reasons += _gpu_reasons(end.get("gpu"), limits)
    out["state"] = "tainted" if reasons else "clean"
    return out


def _gpu_reasons(gpus: list[dict] | None, limits: Thresholds) -> list[str]:
    """GPU reasons from the end reading (None = not measured: no reason)."""
    reasons = []
    for g in gpus or []:
        if g.get("other_processes", 0) > limits.gpu_other_processes:
            reasons.append(f"GPU {g['index']}: {g['other_processes']} other process(es) on it")
        if g.get("throttle_reasons", 0) & limits.gpu_throttle_mask:
            reasons.append(f"GPU {g['index']}: clocks throttled (NVML reasons {g['throttle_reasons']:#x})")
    return reasons


def taint_problem(result: dict[str, Any]) -> str | None:
    """Why a result is not a figure because its machine was contended, or None (clean, not measured,
    an older result without readings, or the rule switched off for the run)."""
    c = result.get("contention") or {}
    verdict = c.get("classification") or {}
    if verdict.get("state") != "tainted" or c.get("rule") == "off":
        return None
    return "tainted: " + "; ".join(verdict.get("reasons") or ["contended"])


def overridden(result: dict[str, Any]) -> bool:
    """Whether a result was tainted but judged anyway: its contention rule was switched off."""
    c = result.get("contention") or {}
    return c.get("rule") == "off" and (c.get("classification") or {}).get("state") == "tainted"
