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


# --- contention readings: taken at the start and the end of the fit, no sampling thread ---------------

CPU_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")  # /proc/stat, jiffies


def _proc_stat_cpu(text: str | None) -> dict | None:
    line = next((ln for ln in (text or "").splitlines() if ln.startswith("cpu ")), None)
    return dict(zip(CPU_FIELDS, map(int, line.split()[1:9]))) if line else None


def _pid_stat(pid: str) -> tuple[int, list[str]] | None:
    text = _read(Path(f"/proc/{pid}/stat"))
    if not text:
        return None
    fields = text[text.rfind(")") + 2:].split()  # after "pid (comm) ": state, ppid, ...
    return int(fields[1]), fields


def _own_tree() -> dict[str, list[str]]:
    """This process and its live descendants (local ranks, loader workers): pid -> /proc/PID/stat fields."""
    stats = {p.name: _pid_stat(p.name) for p in Path("/proc").glob("[0-9]*")} if Path("/proc/self").exists() else {}
    stats = {pid: s for pid, s in stats.items() if s}
    children: dict[int, list[str]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    todo, tree = [str(os.getpid())] if str(os.getpid()) in stats else [], {}
    while todo:
        pid = todo.pop()
        tree[pid] = stats[pid][1]
        todo += children.get(int(pid), [])
    return tree


def own_cpu_s(tree: dict[str, list[str]] | None = None) -> float | None:
    """CPU seconds of this process and every live descendant, each with its reaped children
    (/proc/PID/stat utime, stime, cutime, cstime: fields 14-17). None where /proc is absent."""
    tree = _own_tree() if tree is None else tree
    if not tree:
        return None
    return sum(int(x) for fields in tree.values() for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def cgroup_cpu_stat(root: Path = CGROUP_ROOT, proc_cgroup: Path = Path("/proc/self/cgroup")) -> dict | None:
    """Throttling counters of this process's cgroup: ``nr_periods``, ``nr_throttled``, ``throttled_s``
    (v2 ``cpu.stat`` throttled_usec, v1 throttled_time ns). None where not readable."""
    for line in (_read(proc_cgroup) or "").splitlines():
        _, controllers, rel = line.split(":", 2)
        if controllers == "":
            folder = root / rel.lstrip("/")
        elif "cpu" in controllers.split(","):
            folder = next((root / d for d in ("cpu,cpuacct", "cpu") if (root / d).is_dir()), root / "cpu") / rel.lstrip("/")
        else:
            continue
        kv = dict(ln.split() for ln in (_read(folder / "cpu.stat") or "").splitlines() if len(ln.split()) == 2)
        if "nr_periods" in kv:
            usec = int(kv["throttled_usec"]) if "throttled_usec" in kv else int(kv.get("throttled_time", 0)) / 1000
            return {"nr_periods": int(kv["nr_periods"]), "nr_throttled": int(kv["nr_throttled"]),
                    "throttled_s": usec / 1e6}
    return None


def cpu_mhz() -> float | None:
    """Mean current CPU frequency over the node's cores (MHz), from /proc/cpuinfo; None where not shown."""
    values = [float(ln.split(":")[1]) for ln in (_read(Path("/proc/cpuinfo")) or "").splitlines()
              if ln.startswith("cpu MHz")]
    return sum(values) / len(values) if values else None


def gpu_reading(own_pids: set[int]) -> list[dict] | None:
    """Per GPU (NVML via the optional ``pynvml`` module): SM clock (MHz), the current clock-throttle
    reasons bitmask, and processes on it that are not this run's. None = not measured (no pynvml, no
    driver); never raises."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 (absent module or driver: not measured)
        return None
    try:
        out = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            procs = pynvml.nvmlDeviceGetComputeRunningProcesses(h)
            out.append({"index": i, "sm_clock_mhz": pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_SM),
                        "throttle_reasons": int(pynvml.nvmlDeviceGetCurrentClocksThrottleReasons(h)),
                        "other_processes": sum(1 for p in procs if p.pid not in own_pids)})
        return out
    except Exception:  # noqa: BLE001
        return None
    finally:
        pynvml.nvmlShutdown()


def reading() -> dict:
    """One contention reading (plain JSON data; None = not readable here): monotonic time ``t_s``,
    node CPU jiffies ``cpu`` (/proc/stat) with ``clk_tck``, ``own_cpu_s`` (:func:`own_cpu_s`),
    ``loadavg`` (1, 5, 15 min), ``cgroup`` (:func:`cgroup_cpu_stat`), ``cpu_mhz``, ``gpu`` (:func:`gpu_reading`)."""
    import time

    load, tree = _read(Path("/proc/loadavg")), _own_tree()
    return {"t_s": time.monotonic(), "cpu": _proc_stat_cpu(_read(Path("/proc/stat"))),
            "clk_tck": os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else None, "own_cpu_s": own_cpu_s(tree),
            "loadavg": [float(x) for x in load.split()[:3]] if load else None, "cgroup": cgroup_cpu_stat(),
            "cpu_mhz": cpu_mhz(), "gpu": gpu_reading({int(pid) for pid in tree} or {os.getpid()})}
