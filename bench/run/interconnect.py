"""The interconnect check of a ddp run, as a Lightning callback: measured once the run's process group
exists and before the timed fit (:mod:`bench.run.allreduce` measures; the record is the result's
``interconnect``). Kept apart from :mod:`bench.run.allreduce` so that ``cifar-bench comm`` does not
import Lightning (seconds of start-up on a loaded machine).
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch.distributed as dist

from bench.core.config import BenchConfig
from bench.results import bandwidth
from bench.run.allreduce import gradient_bytes, interconnect_check, skipped


class InterconnectCheck(L.Callback):
    """Runs :func:`interconnect_check` once, at the first ``setup`` of a ddp run (after Lightning has made
    the process group, before the timed fit: ``fit_s`` starts at ``on_train_start``).

    Attributes:
        record: the ``interconnect`` record (None for a case without a process group: baseline, dp).
    """

    def __init__(self, config: BenchConfig) -> None:
        self.config = config
        self.record: dict[str, Any] | None = None
        if config.case == "ddp" and not config.comm_check:
            self.record = skipped("interconnect check off (--no-comm-check, the smoke preset's default)")

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.record is not None or self.config.case != "ddp" or not dist.is_initialized():
            return
        backend = dist.get_backend()
        plan = bandwidth.plan_check(gradient_bytes(pl_module), self.config.accelerator)
        self.record = interconnect_check(plan, trainer.strategy.root_device, backend)
