"""Per-run lines under the ``table`` and in the report: where a run's wall time went
(:mod:`bench.measure.wallphases`) and its straggler (:mod:`bench.results.straggler`). Pure, torch-free.

A run that is not a figure because the machine was contended (tainted) still gets its lines: the
phases and the straggler say what happened, not how fast the system is.
"""

from __future__ import annotations

from typing import Any

from bench.measure.wallphases import phase_line
from bench.results.straggler import straggler_line


def run_lines(results: list[dict[str, Any]]) -> list[str]:
    """``"<run_id>: wall time: import 3.1 s, ..."`` and ``"<run_id>: straggler: ..."`` for each ok result
    (each run once, in the order given) that has them."""
    lines, seen = [], set()
    for r in results:
        if r.get("status") != "ok" or r.get("run_id") in seen:
            continue
        seen.add(r.get("run_id"))
        if phases := phase_line((r.get("metrics") or {}).get("phases")):
            lines.append(f"{r['run_id']}: wall time: {phases}")
        if r.get("case") == "ddp" and (line := straggler_line(r.get("straggler"))):
            lines.append(f"{r['run_id']}: {line}")
    return lines
