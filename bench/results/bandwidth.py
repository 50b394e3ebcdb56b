"""All-reduce bandwidth arithmetic of the interconnect check: message sizes, nccl-tests' figures, node pairs.

Pure functions over plain numbers (no torch); :mod:`bench.run.allreduce` measures, this module computes.

Definitions (nccl-tests, ``doc/PERFORMANCE.md``), for one all-reduce of ``S`` bytes taking ``t`` seconds
over ``n`` ranks:

* algorithm bandwidth ``algbw = S / t``;
* bus bandwidth ``busbw = algbw * 2 (n - 1) / n``: the bytes each rank's link really carries in a ring
  all-reduce, so the figure compares with a link's peak whatever the rank count. ``n = 1`` gives 0 by
  definition (the all-reduce is a local copy; ``algbw`` is then the copy rate).

Bandwidths are in GB/s with 1 GB = 1e9 bytes (as nccl-tests prints them); times in microseconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

KIB, MIB = 1024, 1024 * 1024
DDP_BUCKET_BYTES = 25 * MIB  # DistributedDataParallel's default bucket_cap_mb (torch.nn.parallel.distributed)
LATENCY_BYTES = 8  # nccl-tests' smallest default message: time is latency, not bandwidth (bytes)


@dataclass(frozen=True)
class CheckPlan:
    """What the interconnect check runs: message sizes (bytes, float32 elements: multiples of 4) and its
    repetitions. Per size: ``warmup`` all-reduces untimed, then ``blocks`` timed blocks of ``iterations``
    all-reduces (``small_iterations`` for sizes up to 1 MiB, where one call takes microseconds)."""

    sizes_bytes: tuple[int, ...]
    gradient_bytes: int  # the model's gradients, float32 (bytes)
    bucket_bytes: int  # min(DDP's bucket cap, gradient bytes): the biggest message DDP sends (bytes)
    max_bytes: int  # the cap of the largest size on this accelerator (bytes)
    warmup: int = 2
    blocks: int = 3
    iterations: int = 3
    small_iterations: int = 10
    budget_s: float = 15.0  # a table stops before a size whose projected cost exceeds what is left (s)

    def iterations_of(self, size_bytes: int) -> int:
        """Timed all-reduces per block for ``size_bytes``."""
        return self.small_iterations if size_bytes <= MIB else self.iterations


#: the largest message per accelerator (bytes). CPU (gloo over TCP): the check stays about 1-2 s on a
#: loaded 2-core machine; GPU: well beyond DDP's 25 MiB bucket, still a fraction of a second on NVLink/IB.
MAX_BYTES = {"cpu": 8 * MIB, "gpu": 256 * MIB}
_LADDER = {"cpu": (LATENCY_BYTES, 64 * KIB, MIB, 8 * MIB),
           "gpu": (LATENCY_BYTES, 64 * KIB, MIB, DDP_BUCKET_BYTES, 4 * DDP_BUCKET_BYTES, 256 * MIB)}


def plan_check(gradient_bytes: int, accelerator: str) -> CheckPlan:
    """The sizes of the check: nccl-tests' smallest message (latency), a fixed ladder, and the model's
    gradient bucket (min(25 MiB, gradients)) and twice it, all capped at :data:`MAX_BYTES` of the
    accelerator ("cpu" or "gpu"). Raises ValueError for another accelerator or a negative size."""
    if accelerator not in MAX_BYTES or gradient_bytes < 0:
        raise ValueError(f"plan_check: accelerator cpu or gpu and gradient bytes >= 0, got {accelerator!r}, "
                         f"{gradient_bytes}")
    cap = MAX_BYTES[accelerator]
    bucket = _float32(min(DDP_BUCKET_BYTES, max(gradient_bytes, LATENCY_BYTES)))
    sizes = {s for s in _LADDER[accelerator]} | {bucket, _float32(2 * bucket)}
    return CheckPlan(tuple(sorted(s for s in sizes if s <= cap)), gradient_bytes, bucket, cap)


def _float32(size: int) -> int:
    """``size`` rounded down to whole float32 elements (at least one), bytes."""
    return max(4, size - size % 4)


def projected_cost_s(row: dict[str, Any], next_bytes: int, plan: CheckPlan) -> float:
    """Seconds the next size would take (warm-up and every block), from the last row's time scaled by
    size above 64 KiB (below, a call's time is latency: scaling 8 B to 64 KiB would project 8192 times
    the latency), never below the last row's. Pure: every rank computes it from the same rank-averaged
    times, so all ranks agree where a table stops."""
    per_call_s = row["time_us"] / 1e6 * max(1.0, next_bytes / max(row["size_bytes"], 64 * KIB))
    return per_call_s * (plan.warmup + plan.blocks * plan.iterations_of(next_bytes))


def row_cost_s(row: dict[str, Any], plan: CheckPlan) -> float:
    """Seconds a measured row took, from its rank-averaged block times (warm-up at the fastest block's rate)."""
    return (sum(row["block_times_us"]) * row["iterations"] + row["time_us"] * plan.warmup) / 1e6


def bus_factor(ranks: int) -> float:
    """nccl-tests' all-reduce bus factor 2 (n - 1) / n (0 for one rank). ValueError for n < 1."""
    if ranks < 1:
        raise ValueError(f"ranks must be >= 1, got {ranks}")
    return 2.0 * (ranks - 1) / ranks


def size_row(size_bytes: int, block_times_s: list[float], ranks: int, iterations: int) -> dict[str, Any]:
    """One row of the table from the per-iteration seconds of each timed block (already averaged over
    the ranks, as nccl-tests does). The figure is the fastest block: noise on a shared machine only
    slows a block down. Returns ``{"size_bytes", "time_us", "algbw_gbps", "busbw_gbps", "iterations",
    "blocks", "block_times_us"}``; bandwidths None when the time is not positive."""
    best = min(block_times_s)
    algbw = size_bytes / best / 1e9 if best > 0 else None
    return {"size_bytes": size_bytes, "time_us": best * 1e6, "algbw_gbps": algbw,
            "busbw_gbps": algbw * bus_factor(ranks) if algbw is not None else None,
            "iterations": iterations, "blocks": len(block_times_s),
            "block_times_us": [t * 1e6 for t in block_times_s]}


def node_order(hostnames: list[str]) -> list[str]:
    """The nodes of a job in the order of their first global rank (``hostnames`` per global rank)."""
    return list(dict.fromkeys(hostnames))


def pair_rounds(nodes: int) -> list[list[tuple[int, int]]]:
    """Node pairs (indices into :func:`node_order`) of the per-pair check, as at most two rounds of
    disjoint pairs: each node with its ring neighbour. Even ``nodes``: the whole ring (0-1, 2-3, ...
    then 1-2, 3-4, ..., last-0); odd: the ring without its closing pair (a ring of odd length needs a
    third round), which still pairs every node with a neighbour. 2 nodes: one pair; 1 node: none."""
    if nodes < 2:
        return []
    if nodes == 2:
        return [[(0, 1)]]
    edges = [(i, i + 1) for i in range(nodes - 1)] + ([(nodes - 1, 0)] if nodes % 2 == 0 else [])
    return [edges[0::2], edges[1::2]]


def pair_ranks(hostnames: list[str], pair: tuple[int, int]) -> list[int]:
    """Global ranks on the two nodes of ``pair`` (indices into :func:`node_order` of ``hostnames``)."""
    nodes = node_order(hostnames)
    members = {nodes[pair[0]], nodes[pair[1]]}
    return [rank for rank, host in enumerate(hostnames) if host in members]


def largest_row(table: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The row of the largest message (the bandwidth figure), or None for an empty table."""
    return max(table, key=lambda row: row["size_bytes"]) if table else None


def size_text(size_bytes: int) -> str:
    """A message size for people: 8 B, 64 KiB, 242.2 KiB, 25 MiB."""
    for unit, scale in (("MiB", MIB), ("KiB", KIB)):
        if size_bytes >= scale:
            value = size_bytes / scale
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{size_bytes} B"
