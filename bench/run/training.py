"""Training set-up of the three cases: the Lightning Trainer (strategy, devices, precision,
logger) and the seeded LightningModule, plus what is read back from the module that trained.

All three cases go through the same Trainer loop, module, data and timing:

* ``baseline``: Trainer(devices=1).
* ``dp``: one process, the network wrapped in ``nn.DataParallel`` (:mod:`bench.run.dataparallel`), the
  Trainer on cuda:0 with a SingleDeviceStrategy.
* ``ddp``: Lightning's DDPStrategy (gloo on CPU, nccl on GPU), one process per device. On one
  machine Lightning's launcher starts the other ranks by re-running this command; under
  ``srun`` every task is a rank and SLURMEnvironment reads rank and world size.
"""

from __future__ import annotations

import datetime

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.plugins.environments import SLURMEnvironment
from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy
from torch import nn

from bench.core.config import BenchConfig, ConfigError
from bench.measure import environment
from bench.run import faults
from bench.run.dataparallel import bare_network, replica_autocast, wrap_data_parallel
from bench.run.model import CifarModule, count_parameters


def check_accelerator(config: BenchConfig) -> None:
    """Fail early when a GPU is requested but not usable (never fall back to CPU silently)."""
    if config.accelerator == "gpu":
        environment.check_gpu_usable(config.devices)


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
    Lightning ``profiler`` (bench.measure.breakdown's data-action clock; None = Lightning's pass-through)."""
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
        use_distributed_sampler=False,  # bench.data.sampling's samplers already shard by rank
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
        ConfigError: --init-weights cannot be read or does not fit the network.
    """
    L.seed_everything(config.seed, workers=True, verbose=False)
    module = CifarModule(config)
    if config.init_weights:
        try:
            module.net.load_state_dict(torch.load(config.init_weights, map_location="cpu", weights_only=True))
        except Exception as err:  # a file that is no state_dict fails in many ways (EOFError, KeyError, ...)
            # cut short: torch's further advice (weights_only=False) is not what to do here
            raise ConfigError(f"cannot load --init-weights {config.init_weights} ({faults.error_text(err, 160)}); "
                              "give a state_dict file written by --save-weights for this --model") from err
    if config.case == "dp":
        wrap_data_parallel(module, list(range(config.devices)))
    return module


def training_settings(module: CifarModule) -> dict:
    """Settings read back from the module that trained: dp replicas' autocast (None outside dp),
    torchmetrics' argument validation of the accuracy metrics, and SyncBatchNorm layers in the network."""
    return {"dp_replica_autocast": replica_autocast(module),
            "metric_validate_args": module.test_accuracy.validate_args,  # (training accuracy is a plain count)
            "sync_batchnorm_layers": sum(isinstance(m, nn.SyncBatchNorm) for m in module.net.modules())}


def trained_parameters(module: CifarModule) -> int:
    """Trainable parameters of the network (without the DataParallel wrapper)."""
    return count_parameters(bare_network(module))
