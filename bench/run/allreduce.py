"""The interconnect check: a short all-reduce measurement in the process group of a ddp run (or of
``cifar-bench comm``), recorded as the result's ``interconnect`` section.

Per message size of :func:`bench.results.bandwidth.plan_check`: a warm-up, then timed blocks of
all-reduces of a float32 tensor on the rank's device; each block's time per iteration is averaged over
the ranks (as nccl-tests does) and the fastest block gives the row (:func:`bench.results.bandwidth.size_row`).
When the job spans several nodes, the same is measured per node pair (each node with its ring
neighbour, at most two rounds of disjoint pairs, :func:`bench.results.bandwidth.pair_rounds`), in a
process group of the pair's ranks; with two nodes the pair is the whole job, and the world's table is
its table (not measured twice). Every rank runs the same collectives; the record is the same on all.

Record (``result["interconnect"]``)::

    {"status": "measured" | "skipped", "reason": str | None, "elapsed_s": float (the check's own cost),
     "backend": "gloo" | "nccl", "transport": str | None (bench.run.comm), "world_size", "nodes": [host...],
     "gradient_bytes", "bucket_bytes", "sizes_bytes": [...] (planned), "budget_s", "left_out_bytes": [...]
     (planned sizes the budget left out: a slow link), "table": [size_row...], "latency_us",
     "pairs": [{"nodes": [a, b], "ranks": [...], "round": 1|2, "table": [...], "same_as_world": bool}],
     "definition": str, "note": str | None}
"""

from __future__ import annotations

import socket
import time
from typing import Any

import torch
import torch.distributed as dist

from bench.results import bandwidth
from bench.run import comm

DEFINITION = ("algbw = bytes / time, busbw = algbw x 2(n-1)/n (nccl-tests, all-reduce), GB/s = 1e9 bytes/s; "
              "time = per-iteration seconds of a block, averaged over the ranks; the fastest of the blocks")
WORLD_ONE_NOTE = ("world size 1: the all-reduce is a local copy (algbw is the copy rate, busbw 0 by "
                  "definition); no link was measured")


def skipped(reason: str) -> dict[str, Any]:
    """The record of a check that did not run, with why."""
    return {"status": "skipped", "reason": reason, "elapsed_s": 0.0}


def gradient_bytes(module: torch.nn.Module) -> int:
    """Bytes of the trainable parameters' gradients, float32 (DDP reduces them in float32 buckets)."""
    return sum(p.numel() * 4 for p in module.parameters() if p.requires_grad)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_blocks(size_bytes: int, plan: bandwidth.CheckPlan, device: torch.device, group=None) -> list[float]:
    """Per-iteration seconds of each timed block of all-reduces of ``size_bytes`` in ``group`` (None = world),
    averaged over the group's ranks. Collective: every rank of ``group`` calls it with the same arguments."""
    tensor = torch.ones(size_bytes // 4, dtype=torch.float32, device=device)
    iterations = plan.iterations_of(size_bytes)
    for _ in range(plan.warmup):
        dist.all_reduce(tensor, group=group)
    times = []
    for _ in range(plan.blocks):
        _sync(device)
        dist.barrier(group=group)  # every rank starts the block together
        start = time.perf_counter()
        for _ in range(iterations):
            dist.all_reduce(tensor, group=group)
        _sync(device)
        times.append((time.perf_counter() - start) / iterations)
    mean = torch.tensor(times, dtype=torch.float64, device=device)
    dist.all_reduce(mean, group=group)  # sum over the group's ranks
    return (mean / dist.get_world_size(group)).tolist()


def measure_table(plan: bandwidth.CheckPlan, device: torch.device, group=None) -> list[dict[str, Any]]:
    """The table of ``group`` (None = world): one :func:`bench.results.bandwidth.size_row` per planned size,
    smallest first, stopping before a size whose projected cost exceeds what is left of ``plan.budget_s``
    (a slow link: the sizes left out are those the table lacks)."""
    ranks, rows, spent = dist.get_world_size(group), [], 0.0
    for size in plan.sizes_bytes:
        if rows and bandwidth.projected_cost_s(rows[-1], size, plan) > plan.budget_s - spent:
            break  # (every rank decides alike: the times are averaged over the ranks)
        rows.append(bandwidth.size_row(size, time_blocks(size, plan, device, group), ranks, plan.iterations_of(size)))
        spent += bandwidth.row_cost_s(rows[-1], plan)
    return rows


def measure_pairs(plan: bandwidth.CheckPlan, device: torch.device, hostnames: list[str],
                  world_table: list[dict]) -> list[dict[str, Any]]:
    """Per node pair tables (see the module docstring). Collective over the world: every rank creates
    every pair's group (torch requires it), then the ranks of each pair measure it, pairs of a round at once."""
    nodes, rank, pairs = bandwidth.node_order(hostnames), dist.get_rank(), []
    for number, round_pairs in enumerate(bandwidth.pair_rounds(len(nodes)), start=1):
        for pair in round_pairs:
            ranks = bandwidth.pair_ranks(hostnames, pair)
            entry = {"nodes": [nodes[pair[0]], nodes[pair[1]]], "ranks": ranks, "round": number}
            if len(ranks) == len(hostnames):  # two nodes: the pair is the world, measured once
                pairs.append({**entry, "table": world_table, "same_as_world": True})
                continue
            group = dist.new_group(ranks)
            table = measure_table(plan, device, group) if rank in ranks else None
            pairs.append({**entry, "table": table, "same_as_world": False})
        dist.barrier()
    return _shared_pair_tables(pairs)


def _shared_pair_tables(pairs: list[dict]) -> list[dict]:
    """Each pair's table from a rank of that pair, on every rank (all_gather_object over the world)."""
    if all(p["same_as_world"] for p in pairs):
        return pairs
    everyone: list = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, [p["table"] for p in pairs])
    for i, pair in enumerate(pairs):
        pair["table"] = everyone[pair["ranks"][0]][i]
    return pairs


def interconnect_check(plan: bandwidth.CheckPlan, device: torch.device, backend: str) -> dict[str, Any]:
    """The ``interconnect`` record (module docstring), measured now in the initialised default process
    group. Collective: every rank calls it; each returns the same record."""
    start = time.perf_counter()
    hostnames: list = [None] * dist.get_world_size()
    dist.all_gather_object(hostnames, socket.gethostname())
    table = measure_table(plan, device)
    pairs = measure_pairs(plan, device, hostnames, table)
    facts: list = [None] * dist.get_world_size()
    dist.all_gather_object(facts, comm.own_nccl_facts())
    transport = comm.communication(backend, facts, {}, None)["network"]
    smallest = min(table, key=lambda row: row["size_bytes"])
    return {"status": "measured", "reason": None, "elapsed_s": time.perf_counter() - start,  # this rank's clock
            "backend": backend,
            "transport": transport, "world_size": dist.get_world_size(), "nodes": bandwidth.node_order(hostnames),
            "gradient_bytes": plan.gradient_bytes, "bucket_bytes": plan.bucket_bytes,
            "sizes_bytes": list(plan.sizes_bytes), "budget_s": plan.budget_s,
            "left_out_bytes": list(plan.sizes_bytes[len(table):]), "table": table, "latency_us": smallest["time_us"],
            "pairs": pairs, "definition": DEFINITION,
            "note": WORLD_ONE_NOTE if dist.get_world_size() == 1 else None}
