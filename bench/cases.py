"""The benchmark cases: ``baseline`` (one device), ``dp`` (DataParallel) and ``ddp`` (DDP).

All three go through the same Lightning Trainer loop, module, data and timing:

* ``baseline``: Trainer(devices=1).
* ``dp``: one process; the network inside the LightningModule is wrapped in
  ``torch.nn.DataParallel`` over the node's GPUs and the Trainer runs on cuda:0 with a
  SingleDeviceStrategy (Lightning 2 removed ``strategy='dp'``). DataParallel splits each global
  batch over the GPUs, so the per-device batch is global / GPUs. Skipped with < 2 CUDA devices.
* ``ddp``: Lightning's DDPStrategy (gloo on CPU, nccl on GPU), one process per device. On one
  machine Lightning's launcher starts the other ranks by re-running this command; under
  ``srun`` every task is a rank and SLURMEnvironment reads rank and world size.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import socket
from typing import Any

import lightning as L
import torch
import torch.distributed as dist
from filelock import FileLock
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.plugins.environments import SLURMEnvironment
from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy
from torch import nn

from bench import environment
from bench.config import BenchConfig, ConfigError
from bench.data import cache_path, prepare_cache
from bench.model import CifarModule, count_parameters
from bench.sources import DataError


def dp_skip_reason(config: BenchConfig) -> str | None:
    """Why the dp case cannot run here, or None when it can.

    Raises:
        bench.environment.GPUUnavailableError: a GPU is present but unusable (torch's reason, e.g. a
            driver too old for this CUDA build): a failure, like baseline and ddp, never a skip.
    """
    if reason := environment.unusable_gpu_reason():
        raise environment.GPUUnavailableError(
            f"dp: a GPU is present but torch cannot use it ({reason}). torch {torch.__version__} is built for "
            f"CUDA {torch.version.cuda}; check nvidia-smi and the driver, or choose a matching image (README)")
    found = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if found < 2:
        return f"DataParallel needs 2 or more CUDA devices on one node; this machine has {found}"
    if config.devices < 2 or config.devices > found:
        return f"dp asks for {config.devices} GPUs; this node has {found} (use --devices 2..{found})"
    return None


#: autocast dtype of each mixed precision (Lightning's MixedPrecision plugin uses the same)
AUTOCAST_DTYPES = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


class AutocastReplica(nn.Module):
    """Runs ``net`` under autocast with the run's dtype, in whatever thread calls it.

    DataParallel runs each replica in its own thread and re-enters ``torch.autocast(device_type,
    enabled=...)`` there *without* a dtype (torch ``nn/parallel/parallel_apply.py``); the autocast
    dtype is per thread, so a replica would compute in the device's default (float16 on CUDA) under
    ``bf16-mixed``. This wrapper re-enters autocast with ``dtype`` whenever the caller's autocast is
    on, and records in ``seen`` (a dict shared by all replicas: DataParallel's replicas are shallow
    copies) the autocast state its forward really ran with: ``{"enabled": bool, "dtype": str}``.

    Args:
        net: the network; device_type: "cuda" (or "cpu" in tests); dtype: None = no mixed precision.
    """

    def __init__(self, net: nn.Module, device_type: str, dtype: torch.dtype | None) -> None:
        super().__init__()
        self.net, self.device_type, self.dtype = net, device_type, dtype
        self.seen: dict = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dtype is None or not torch.is_autocast_enabled(self.device_type):
            self._record()
            return self.net(x)
        with torch.autocast(self.device_type, dtype=self.dtype):
            self._record()
            return self.net(x)

    def _record(self) -> None:
        on = torch.is_autocast_enabled(self.device_type)
        self.seen.update(enabled=on, dtype=str(torch.get_autocast_dtype(self.device_type)).removeprefix("torch.")
                         if on else None)


def wrap_data_parallel(module: CifarModule, device_ids: list[int], device_type: str = "cuda") -> CifarModule:
    """Replace ``module.net`` by ``nn.DataParallel(AutocastReplica(net), device_ids)`` and return the module.

    The replicas compute in the run's precision (see :class:`AutocastReplica`). Without CUDA,
    DataParallel calls the wrapped network directly (used by the CPU unit test).
    """
    dtype = AUTOCAST_DTYPES.get(module.config.precision)
    module.net = nn.DataParallel(AutocastReplica(module.net, device_type, dtype), device_ids=device_ids or None)
    return module


def replica_autocast(module: CifarModule) -> dict | None:
    """The autocast state dp's replicas really ran with (``{"enabled", "dtype"}``), None outside dp."""
    net = module.net.module if isinstance(module.net, nn.DataParallel) else None
    return dict(net.seen) if isinstance(net, AutocastReplica) else None


def training_settings(module: CifarModule) -> dict:
    """Settings read back from the module that trained: dp replicas' autocast (None outside dp),
    torchmetrics' argument validation of the accuracy metrics, and SyncBatchNorm layers in the network."""
    return {"dp_replica_autocast": replica_autocast(module),
            "metric_validate_args": module.test_accuracy.validate_args,  # (training accuracy is a plain count)
            "sync_batchnorm_layers": sum(isinstance(m, nn.SyncBatchNorm) for m in module.net.modules())}


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
                      "cluster_environment": cluster_environment(trainer)}


def cluster_environment(trainer: L.Trainer) -> str | None:
    """Who started the ranks, e.g. "SLURMEnvironment (processes started by srun)".

    Not Lightning's ``creates_processes_externally``: LightningEnvironment answers it from
    ``LOCAL_RANK``, which its launcher also sets in rank 0 after starting the others.
    """
    env = getattr(trainer.strategy, "cluster_environment", None)
    if env is None:
        return None
    from bench.faults import LAUNCHER_ENV  # (faults imports config only)

    if isinstance(env, SLURMEnvironment):
        started = "srun"
    elif trainer.world_size == 1:
        started = "this process alone"
    elif os.environ.get(LAUNCHER_ENV):
        started = "Lightning's launcher in rank 0"
    else:
        started = "an external launcher"
    return f"{type(env).__name__} (processes started by {started})"


def ensure_data(config: BenchConfig) -> None:
    """Decode the data set into the cache once (under a file lock, so concurrent ranks wait).

    Runs before any process group exists, so a bad data set fails every rank with a clear
    error and never leaves ranks waiting in a collective.

    Raises:
        bench.sources.DataError: missing, unreadable or corrupt data.
    """
    if config.data == "synthetic":
        return
    path = cache_path(config)
    if path.is_file():  # staged ahead (make data): jobs only read, the folder may be read-only
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(f"{path}.lock", timeout=3600)
        lock.acquire()
    except OSError as err:
        raise DataError(f"cannot use the data cache folder {path.parent}: {err.strerror}; set --cache-dir or "
                        "BENCH_CACHE to a writable folder, or stage the cache ahead with `make data`") from err
    try:
        prepare_cache(config, path)
    finally:
        lock.release()


def _strategy(config: BenchConfig):
    if config.case == "ddp":
        backend = "nccl" if config.accelerator == "gpu" else "gloo"
        # timeout: bounds the rendezvous and every collective when a rank is missing or dead
        return DDPStrategy(process_group_backend=backend, find_unused_parameters=False,
                           timeout=datetime.timedelta(seconds=config.pg_timeout_s))
    if config.case == "dp":
        return SingleDeviceStrategy(device=torch.device("cuda", 0))
    return "auto"


def build_trainer(config: BenchConfig, run_id: str, callbacks: list[L.Callback], profiler=None) -> L.Trainer:
    """The Lightning Trainer of a case: strategy, devices, precision, logger, callbacks and the
    Lightning ``profiler`` (bench.breakdown's data-action clock; None = Lightning's pass-through)."""
    plugins = [SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else None
    validate = config.val_every_n_epochs > 0
    return L.Trainer(
        accelerator=config.accelerator,
        devices=config.devices if config.case == "ddp" else 1,
        num_nodes=config.num_nodes if config.case == "ddp" else 1,
        strategy=_strategy(config),
        plugins=plugins,
        precision=config.precision,
        benchmark=config.cudnn_benchmark,  # the same value apply_device_settings set and recorded
        sync_batchnorm=config.sync_batchnorm,  # SyncBatchNorm under DDP; single-device strategies ignore it
        max_epochs=config.epochs,
        logger=TensorBoardLogger(config.out_dir, name="tensorboard", version=run_id, default_hp_metric=False),
        callbacks=callbacks,
        profiler=profiler,
        use_distributed_sampler=False,  # bench.data's samplers already shard by rank
        check_val_every_n_epoch=config.val_every_n_epochs if validate else None,
        limit_val_batches=1.0 if validate else 0,
        num_sanity_val_steps=0,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
        log_every_n_steps=10,
    )


def build_module(config: BenchConfig) -> CifarModule:
    """A seeded CifarModule (or loaded from ``config.init_weights``), wrapped for DP in the dp case.

    Raises:
        ConfigError: init_weights cannot be read or does not fit the network.
    """
    L.seed_everything(config.seed, workers=True, verbose=False)
    module = CifarModule(config)
    if config.init_weights:
        try:
            module.net.load_state_dict(torch.load(config.init_weights, map_location="cpu", weights_only=True))
        except (OSError, RuntimeError) as err:
            raise ConfigError(f"cannot load init_weights {config.init_weights}: {err}") from err
    if config.case == "dp":
        wrap_data_parallel(module, list(range(config.devices)))
    return module


def parameter_digest(module: nn.Module) -> str:
    """SHA-256 of all parameter values in order (bit-exact identity check across ranks)."""
    h = hashlib.sha256()
    for p in module.parameters():
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def all_gather(obj: Any) -> list[Any]:
    """``obj`` of every rank, ordered by global rank (just ``[obj]`` without a process group).

    Collective: every rank must call it.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    everyone: list = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, obj)
    return everyone


def gather_rank_facts(module: CifarModule, extra: dict[str, Any] | None = None) -> list[dict]:
    """Every rank's hostname, parameter digest, mean training loss of the last epoch and ``extra``.

    Collective: every rank must call it. Returns the list ordered by global rank.
    """
    steps = max(module.loss_steps, 1)
    mine = {"hostname": socket.gethostname(), "param_digest": parameter_digest(module),
            "loss_mean": float(module.loss_sum) / steps, **(extra or {})}
    return all_gather(mine)


def destroy_process_group() -> None:
    """Tear the process group down (gloo can abort at interpreter exit otherwise)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def check_accelerator(config: BenchConfig) -> None:
    """Fail early when a GPU is requested but not usable (never fall back to CPU silently)."""
    if config.accelerator == "gpu":
        environment.check_gpu_usable(config.devices)


def bare_network(module: CifarModule) -> nn.Module:
    """The network without its DataParallel (and autocast) wrapper."""
    net = module.net.module if isinstance(module.net, nn.DataParallel) else module.net
    return net.net if isinstance(net, AutocastReplica) else net


def trained_parameters(module: CifarModule) -> int:
    """Trainable parameters of the network (without the DataParallel wrapper)."""
    return count_parameters(bare_network(module))
