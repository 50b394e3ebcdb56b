"""The dp case's DataParallel: when it can run, the wrapper that keeps the run's precision in every
replica, and what the replicas really ran with.

``dp`` is one process; the network inside the LightningModule is wrapped in ``torch.nn.DataParallel``
over the node's GPUs and the Trainer runs on cuda:0 with a SingleDeviceStrategy (Lightning 2
removed ``strategy='dp'``). DataParallel splits each global batch over the GPUs, so the per-device
batch is global / GPUs. Skipped (with the reason) on fewer than 2 CUDA devices.
"""

from __future__ import annotations

import torch
from torch import nn

from bench.core.config import BenchConfig
from bench.measure import environment
from bench.run.model import CifarModule


def dp_skip_reason(config: BenchConfig) -> str | None:
    """Why the dp case cannot run here, or None when it can.

    Raises:
        bench.measure.environment.GPUUnavailableError: a GPU is present but unusable (torch's reason, e.g. a
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


def bare_network(module: CifarModule) -> nn.Module:
    """The network without its DataParallel (and autocast) wrapper."""
    net = module.net.module if isinstance(module.net, nn.DataParallel) else module.net
    return net.net if isinstance(net, AutocastReplica) else net
