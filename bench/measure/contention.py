"""The CPU a run was given, read where the run is: affinity, the cgroup's CPU quota.

Pure readers of the Linux interfaces (``os.sched_getaffinity``, ``/proc/self/cgroup``, the cgroup v2
``cpu.max`` or v1 ``cpu.cfs_quota_us``/``cpu.cfs_period_us``); each returns None where the
interface is absent (macOS, no cgroup mount), never fails. Used by :mod:`bench.run.runner` to record
``environment.cores_given`` (part of "same system": :mod:`bench.results.system`).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def affinity_cores() -> int | None:
    """CPU cores this process may run on (``os.sched_getaffinity``), None where unknown."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None


def parse_quota(cpu_max: str | None = None, quota_us: str | None = None, period_us: str | None = None) -> float | None:
    """Cores a cgroup quota allows (float, e.g. 1.5), from cgroup v2 ``cpu.max`` text ("150000 100000"
    or "max 100000") or v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (quota -1 = none). None: no quota."""
    if cpu_max is not None:
        quota, _, period = cpu_max.strip().partition(" ")
        if quota == "max" or not period:
            return None
        return int(quota) / int(period)
    if quota_us is not None and period_us is not None and int(quota_us) > 0:
        return int(quota_us) / int(period_us)
    return None


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError):
        return None


def cgroup_quota_cores(root: Path = CGROUP_ROOT, proc_cgroup: Path = Path("/proc/self/cgroup")) -> float | None:
    """The smallest CPU quota (cores) on this process's cgroup path and its parents; None: no quota or unknown."""
    text = _read(proc_cgroup)
    if text is None:
        return None
    quotas = []
    for line in text.splitlines():
        _, controllers, rel = line.split(":", 2)
        v2 = controllers == ""
        if not (v2 or "cpu" in controllers.split(",")):
            continue
        base = root if v2 else next((root / d for d in ("cpu,cpuacct", "cpu") if (root / d).is_dir()), root / "cpu")
        folder = base / rel.lstrip("/")
        while True:
            q = (parse_quota(cpu_max=_read(folder / "cpu.max")) if v2 else
                 parse_quota(quota_us=_read(folder / "cpu.cfs_quota_us"), period_us=_read(folder / "cpu.cfs_period_us")))
            if q is not None:
                quotas.append(q)
            if folder == base or folder.parent == folder:
                break
            folder = folder.parent
    return min(quotas) if quotas else None


def cores_given(cores_per_rank: int | None, torch_threads: int | None, loader_workers: int | None) -> dict:
    """What the run was given: ``affinity_cores``, ``cgroup_quota_cores`` (float or None), ``usable_cores``
    (the affinity capped by the quota, rounded up), and the runner's plan per rank (``cores_per_rank``,
    ``torch_threads``, ``loader_workers``)."""
    affinity, quota = affinity_cores(), cgroup_quota_cores()
    usable = affinity if quota is None else min(affinity or math.ceil(quota), math.ceil(quota))
    return {"affinity_cores": affinity, "cgroup_quota_cores": quota, "usable_cores": usable,
            "cores_per_rank": cores_per_rank, "torch_threads": torch_threads, "loader_workers": loader_workers}
