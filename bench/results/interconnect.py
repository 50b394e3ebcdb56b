"""The interconnect's own verdict: bus bandwidth now against a baseline's, per job and per node pair.

Pure functions over the ``interconnect`` records of results (:mod:`bench.run.allreduce`) and baseline
files (:mod:`bench.results.baselines` keeps :func:`summarise` of a case's runs as its ``interconnect``).

The figure judged is the bus bandwidth (GB/s, nccl-tests' definition, :mod:`bench.results.bandwidth`) at
the largest message size both sides measured: small messages measure latency, not the link. Rules, with
tolerance ``t`` percent (``compare --tolerance``, as for times):

* ``interconnect degraded``: busbw now < busbw baseline x (1 - t/100), for the whole job or for a node
  pair (pairs matched by their place in the ring: the first pair with the first pair); the line names
  the transport and the pair.
* ``interconnect ok``: neither is.
* ``no interconnect verdict``: the baseline has no interconnect figures, was measured on other hardware
  (:func:`bench.results.system.hardware_difference`: "same system" as for times), or with another world
  size or node count (busbw compares across rank counts only on one topology).

A changed transport (e.g. IB then, Socket now: NCCL's silent fallback) is named in the line whatever the verdict.
"""

from __future__ import annotations

import statistics
from typing import Any

from bench.core.tables import render
from bench.results.bandwidth import largest_row, size_text
from bench.results.system import hardware_difference

DEGRADED, OK, NO_VERDICT = "interconnect degraded", "interconnect ok", "no interconnect verdict"


def measured(result: dict | None) -> dict | None:
    """The ``interconnect`` record of a result when it was measured, else None."""
    check = (result or {}).get("interconnect")
    return check if isinstance(check, dict) and check.get("status") == "measured" and check.get("table") else None


def _median_busbw(tables: list[list[dict]], size: int) -> float | None:
    values = [row["busbw_gbps"] for t in tables for row in t if row["size_bytes"] == size and row["busbw_gbps"] is not None]
    return statistics.median(values) if values else None


def summarise(checks: list[dict], run_ids: list[str] | None = None) -> dict[str, Any] | None:
    """The figures of several measured checks of one configuration (medians over the runs), as a baseline
    file keeps them: ``{"transport", "world_size", "nodes", "busbw_gbps": {size: GB/s}, "latency_us",
    "pairs": [{"nodes", "busbw_gbps": {size: GB/s}}], "runs"}``; None when no check was measured."""
    checks = [c for c in checks if c]
    if not checks:
        return None
    first = checks[0]
    sizes = sorted({row["size_bytes"] for c in checks for row in c["table"]})
    pairs = [{"nodes": pair["nodes"],
              "busbw_gbps": {str(s): _median_busbw([c["pairs"][i]["table"] for c in checks
                                                    if len(c.get("pairs") or []) > i and c["pairs"][i]["table"]], s)
                             for s in sizes}}
             for i, pair in enumerate(first.get("pairs") or [])]
    return {"transport": ",".join(sorted({str(c.get("transport")) for c in checks})), "world_size": first["world_size"],
            "nodes": len(first.get("nodes") or []), "busbw_gbps": {str(s): _median_busbw([c["table"] for c in checks], s)
                                                                    for s in sizes},
            "latency_us": statistics.median(c["latency_us"] for c in checks), "pairs": pairs,
            "runs": run_ids or []}


def _largest_common(now: dict, ref: dict) -> int | None:
    common = [int(s) for s in now if now[s] is not None and ref.get(s) is not None]
    return max(common) if common else None


def verdict(now: dict, ref: dict | None, tolerance_pct: float, now_env: dict | None = None,
            ref_env: dict | None = None) -> dict[str, Any]:
    """Judge :func:`summarise` ``now`` against the baseline's ``ref``. Returns ``{"verdict", "text",
    "degraded": [where...]}``: ``text`` is the line to print (verdict, figures, transport, pairs)."""
    if ref is None:
        return _no_verdict("the baseline has no interconnect figures (recorded before the check, or with it off)")
    if why := hardware_difference(now_env, ref_env) if (now_env or ref_env) else None:
        return _no_verdict(f"{why}: record a baseline on this system")
    if (now["world_size"], now["nodes"]) != (ref["world_size"], ref["nodes"]):
        return _no_verdict(f"{now['world_size']} ranks on {now['nodes']} node(s) now, {ref['world_size']} on "
                           f"{ref['nodes']} in the baseline: bus bandwidths of different topologies")
    places = [("all ranks", now["busbw_gbps"], ref["busbw_gbps"])]
    places += [(f"node pair {'-'.join(p['nodes'])}", p["busbw_gbps"], r["busbw_gbps"])
               for p, r in zip(now.get("pairs") or [], ref.get("pairs") or [])]
    parts, degraded = [], []
    for where, mine, theirs in places:
        size = _largest_common(mine, theirs)
        if size is None:
            continue
        a, b = mine[str(size)], theirs[str(size)]
        change = (a / b - 1.0) * 100.0 if b else 0.0
        if b and a < b * (1.0 - tolerance_pct / 100.0):
            degraded.append(where)
        parts.append(f"{where}: {a:.3g} GB/s vs {b:.3g} ({change:+.1f}%) at {size_text(size)}")
    if not parts:
        return _no_verdict("no message size measured on both sides")
    word = DEGRADED if degraded else OK
    transport = now["transport"] if now["transport"] == ref["transport"] else \
        f"{now['transport']} now, {ref['transport']} in the baseline"
    where = f" at {', '.join(degraded)}" if degraded else ""
    return {"verdict": word, "degraded": degraded,
            "text": f"{word}{where} (transport {transport}; tolerance {tolerance_pct:g}%): busbw " + "; ".join(parts)}


def _no_verdict(why: str) -> dict[str, Any]:
    return {"verdict": NO_VERDICT, "degraded": [], "text": f"{NO_VERDICT}: {why}"}


def describe(check: dict) -> str:
    """One line of a measured check: bus bandwidth at the largest size, latency, transport, node pairs."""
    top = largest_row(check["table"])
    text = (f"busbw {_gbps(top['busbw_gbps'])} GB/s (algbw {_gbps(top['algbw_gbps'])}) at {size_text(top['size_bytes'])}, "
            f"latency {check['latency_us']:.0f} us at {size_text(min(check['sizes_bytes']))}, "
            f"{check['world_size']} ranks, {check['transport']}, check {check['elapsed_s']:.1f} s")
    pairs = [f"{'-'.join(p['nodes'])} {_gbps(largest_row(p['table'])['busbw_gbps'])} GB/s"
             for p in check.get("pairs") or [] if p.get("table")]
    return text + (f"; node pairs: {', '.join(pairs)}" if pairs else "") + (f" ({check['note']})" if check.get("note") else "")


def _gbps(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def table_text(check: dict) -> str:
    """The per-size table of a check (as nccl-tests prints it: size, time, algbw, busbw)."""
    rows = [[size_text(r["size_bytes"]), f"{r['time_us']:.1f}", _gbps(r["algbw_gbps"]), _gbps(r["busbw_gbps"])]
            for r in check["table"]]
    return render(("size", "time [us]", "algbw [GB/s]", "busbw [GB/s]"), rows, align=("right",) * 4)

