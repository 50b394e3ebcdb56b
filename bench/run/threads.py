"""The thread plan of a rank: its CPU cores, DataLoader workers and torch threads, applied inside
the running rank (after Lightning's launcher) and read back from what it really had.
"""

from __future__ import annotations

import os
from typing import Any

import lightning as L
import torch
from lightning.pytorch.plugins.environments import SLURMEnvironment

from bench.core.config import BenchConfig


def cores_per_rank(config: BenchConfig, env: dict | None = None) -> int:
    """This rank's usable CPU cores: its affinity (``os.sched_getaffinity``) shared by the ranks of its node.

    Under ``srun`` with ``--cpus-per-task`` (``SLURM_CPUS_PER_TASK``) a task owns that many cores:
    when Slurm binds CPUs the affinity already holds only the task's own cores, so it is not divided
    again; without binding it holds the node's, and the task's share is ``SLURM_CPUS_PER_TASK``.
    Otherwise (Lightning's launcher: the ranks inherit rank 0's affinity) the affinity is divided
    by the ranks on this node.
    """
    env = os.environ if env is None else env
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if config.case != "ddp":
        return max(1, usable)
    per_task = env.get("SLURM_CPUS_PER_TASK", "")
    if "SLURM_STEP_ID" in env and per_task.isdigit() and int(per_task) > 0:
        return max(1, min(usable, int(per_task)))
    return max(1, usable // config.devices)


def loader_workers(config: BenchConfig) -> int:
    """DataLoader workers per rank: ``config.num_workers``, or for -1 (auto) the rank's cores but one
    (that one runs the training step), at most 4 on GPU. On 2 cores: baseline 1 worker, 2 DDP ranks 0.
    The ``device`` data path always gets 0: its loader only hands out index lists."""
    if config.num_workers >= 0:
        return config.num_workers
    if config.data_path == "device":
        return 0
    spare = cores_per_rank(config) - 1
    return max(0, min(4, spare) if config.accelerator == "gpu" else spare)


def set_cpu_threads(config: BenchConfig, workers: int) -> int:
    """Torch threads for this rank: its cores minus the loader workers (>= 1); set them and return the count.

    Lightning's launcher later sets ``cores / processes`` threads itself unless ``OMP_NUM_THREADS``
    is set; :class:`ThreadPlan` applies this count again inside the running rank, after it.
    """
    threads = max(1, cores_per_rank(config) - (workers if config.accelerator == "cpu" else 0))
    torch.set_num_threads(threads)
    return threads


class ThreadPlan(L.Callback):
    """Applies the rank's thread plan after Lightning's launcher and reads back what the rank really had.

    ``setup`` runs in every rank after the launcher's ``_set_num_threads_if_needed`` (Lightning
    2.6: cores / processes threads when ``OMP_NUM_THREADS`` is unset), so the plan wins. ``facts``
    are read at the start of training (or of the test pass without training), inside the rank:
    ``torch_threads`` (torch.get_num_threads), ``loader_workers`` (the DataLoader's own
    num_workers), ``cpu_affinity`` (cores), ``omp_num_threads_env`` and ``cluster_environment``.
    """

    def __init__(self, threads: int) -> None:
        self.threads, self.facts = threads, None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        torch.set_num_threads(self.threads)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._read(trainer, trainer.train_dataloader)

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.facts is None:
            self._read(trainer, trainer.test_dataloaders)

    def _read(self, trainer: L.Trainer, loader: Any) -> None:
        loader = loader[0] if isinstance(loader, (list, tuple)) else loader
        self.facts = {"torch_threads": torch.get_num_threads(), "loader_workers": getattr(loader, "num_workers", None),
                      "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
                      "omp_num_threads_env": os.environ.get("OMP_NUM_THREADS"),
                      "cluster_environment": cluster_environment(trainer),
                      # where this rank ran, for naming a straggler (bench.results.straggler)
                      "cpus": cpu_list(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
                      "cpu_max": cgroup_cpu_max(), "device": device_name(trainer.strategy.root_device)}


def cpu_list(cpus) -> str:
    """The CPU binding as ranges, as taskset and Slurm write it: ``{0, 1, 2, 5}`` -> ``"0-2,5"``."""
    runs: list[list[int]] = []
    for cpu in sorted(cpus):
        if runs and cpu == runs[-1][1] + 1:
            runs[-1][1] = cpu
        else:
            runs.append([cpu, cpu])
    return ",".join(f"{a}-{b}" if b > a else str(a) for a, b in runs)


def cgroup_cpu_max() -> str | None:
    """This process's cgroup CPU quota as cgroup v2's ``cpu.max`` writes it ("QUOTA PERIOD" in us, "max PERIOD"
    without one), from v2's ``cpu.max`` or v1's ``cpu.cfs_quota_us``/``cpu.cfs_period_us`` (quota -1: none);
    None where neither can be read. Sources: the kernel's cgroup v1 and v2 documentation, /proc/self/cgroup."""
    try:
        lines = [line.strip().split(":", 2) for line in open("/proc/self/cgroup")]
        v1 = next((path for _, controllers, path in lines if "cpu" in controllers.split(",")), None)
        if v1 is not None:
            base = f"/sys/fs/cgroup/cpu{v1.rstrip('/')}"
            quota, period = (open(f"{base}/cpu.cfs_{k}_us").read().strip() for k in ("quota", "period"))
            return f"{'max' if quota == '-1' else quota} {period}"
        v2 = next(path for _, controllers, path in lines if controllers == "")
        with open(f"/sys/fs/cgroup{v2.rstrip('/')}/cpu.max") as f:
            return f.read().strip()
    except (OSError, StopIteration, ValueError):
        return None


def device_name(device: torch.device) -> str:
    """``"cpu"``, or ``"cuda:1 (NVIDIA H100 80GB HBM3)"`` (the device's index as this process numbers it)."""
    if device.type != "cuda":
        return str(device)
    return f"{device} ({torch.cuda.get_device_name(device)})"


def cluster_environment(trainer: L.Trainer) -> str | None:
    """Who started the ranks, e.g. "SLURMEnvironment (processes started by srun)".

    Not Lightning's ``creates_processes_externally``: LightningEnvironment answers it from
    ``LOCAL_RANK``, which its launcher also sets in rank 0 after starting the others.
    """
    env = getattr(trainer.strategy, "cluster_environment", None)
    if env is None:
        return None
    from bench.run.faults import LAUNCHER_ENV  # (faults imports config only)

    if isinstance(env, SLURMEnvironment):
        started = "srun"
    elif trainer.world_size == 1:
        started = "this process alone"
    elif os.environ.get(LAUNCHER_ENV):
        started = "Lightning's launcher in rank 0"
    else:
        started = "an external launcher"
    return f"{type(env).__name__} (processes started by {started})"
