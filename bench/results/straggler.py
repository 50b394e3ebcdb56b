"""The straggler of a data-parallel run: the rank that holds the others back (pure, no torch).

In synchronous DDP every rank's step takes the same wall time: the gradient all-reduce ends when the
last rank has handed in its gradients. A slow rank shows itself in the split of that step
(:mod:`bench.measure.breakdown`): it is *busy* longer (data wait, compute, loop overhead: the step
less its exposed all-reduce wait) and waits less in the exposed all-reduce, while the others wait for
it there.

**Rule** (per rank, the last epoch's median step, seconds). Let ``s`` be the rank with the longest
busy time ``busy = step_s - allreduce_s``, and, over all the *other* ranks, ``busy_o`` the median busy
time, ``wait_o`` the median exposed all-reduce wait and ``step_o`` the median step. ``s`` is named the
straggler when both

* ``busy_s - busy_o >= THRESHOLD * step_o`` (it works that much longer than a typical rank), and
* ``wait_o - wait_s >= THRESHOLD * step_o`` (the typical rank waits that much longer than it does:
  the others really were held back),

with :data:`THRESHOLD` = 0.2. Medians over the others make it the same rule for 2 ranks (the other
one) as for 64 (one slow rank does not move the median); with several slow ranks it names the
slowest. A rank slow in its data loading is caught as one slow in compute. Fewer than 2 ranks, or no
breakdown: nobody is named (``rank`` None) and ``why`` says so.
"""

from __future__ import annotations

import statistics
from typing import Any

THRESHOLD = 0.2  # of the typical rank's median step: what a rank must hold the others back by to be named


def find(ranks: list[dict[str, float]], threshold: float = THRESHOLD) -> dict[str, Any]:
    """Apply the rule (module docstring) to per-rank medians.

    Args:
        ranks: ``[{"rank": int, "step_s": s, "allreduce_s": s}, ...]``, one a rank.

    Returns:
        ``{"rank": int | None, "excess_busy_s": s | None, "held_back_s": s | None, "step_s": s | None,
        "why": str}``: ``excess_busy_s`` and ``held_back_s`` are the two differences of the rule for the
        busiest rank, ``step_s`` the others' median step.
    """
    if len(ranks) < 2:
        return {"rank": None, "excess_busy_s": None, "held_back_s": None, "step_s": None,
                "why": "one rank: nobody to hold back"}
    busy = {r["rank"]: r["step_s"] - r["allreduce_s"] for r in ranks}
    slow = max(busy, key=busy.get)
    others = [r for r in ranks if r["rank"] != slow]
    mine = next(r for r in ranks if r["rank"] == slow)
    step_o = statistics.median(r["step_s"] for r in others)
    excess = busy[slow] - statistics.median(busy[r["rank"]] for r in others)
    held = statistics.median(r["allreduce_s"] for r in others) - mine["allreduce_s"]
    named = step_o > 0 and excess >= threshold * step_o and held >= threshold * step_o
    why = (f"rank {slow} is busy {1000 * excess:.1f} ms longer a step than the typical rank, which waits "
           f"{1000 * held:.1f} ms longer in the all-reduce ({held / step_o:.0%} of its {1000 * step_o:.1f} ms step)"
           if step_o > 0 else "no step time")
    if not named:
        why = f"none: the busiest rank, {slow}, holds the others back by less than {threshold:.0%} of a step ({why})"
    return {"rank": slow if named else None, "excess_busy_s": excess, "held_back_s": held, "step_s": step_o,
            "why": why}


def of_result(result: dict[str, Any], threshold: float = THRESHOLD) -> dict[str, Any] | None:
    """The straggler of a result dict, with the named rank's host, device and CPU binding (from
    ``world.read_back_per_rank`` and the breakdown's host names); None without a per-step breakdown."""
    per_rank = ((result.get("metrics") or {}).get("step_breakdown") or {}).get("per_rank") or []
    last = [(r, r["epochs"][-1]) for r in per_rank if r.get("epochs")]
    if not last:
        return None
    found = find([{"rank": r["rank"], "step_s": e["step_s"]["median"], "allreduce_s": e["allreduce_s"]["median"]}
                  for r, e in last], threshold)
    found["threshold"] = threshold
    if found["rank"] is not None:
        read_back = ((result.get("world") or {}).get("read_back_per_rank") or [])
        facts = read_back[found["rank"]] if found["rank"] < len(read_back) and read_back[found["rank"]] else {}
        host = next((r.get("hostname") for r, _ in last if r["rank"] == found["rank"]), None)
        found.update(host=host, device=facts.get("device"), cpus=facts.get("cpus"), cpu_max=facts.get("cpu_max"))
    return found


def straggler_line(straggler: dict[str, Any] | None) -> str:
    """``"straggler: rank 1 on host h, device cpu, CPUs 0-1 (cgroup cpu.max 50000 100000): ..."`` or
    ``"straggler: none (...)"``; "" without a verdict."""
    if not straggler:
        return ""
    if straggler.get("rank") is None:
        return f"straggler: {straggler['why']}"
    where = (f"rank {straggler['rank']} on host {straggler.get('host') or '?'}, "
             f"device {straggler.get('device') or '?'}, CPUs {straggler.get('cpus') or '?'}")
    quota = straggler.get("cpu_max")
    return f"straggler: {where}" + (f" (cgroup cpu.max {quota})" if quota and quota != "max 100000" else "") + \
        f": {straggler['why']}"
