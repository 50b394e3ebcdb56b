"""The two references of the parity benchmark (:mod:`bench.selfcheck.parity`): a hand-written PyTorch loop and
bare Lightning, each doing exactly the product's baseline work with none of its instruments.

Both take the product's own :class:`~bench.data.datamodule.CifarDataModule` (same data set, sampler, data
path, augmentation, loader workers and pinned memory), the same network and initial weights
(``L.seed_everything(seed, workers=True)`` then :func:`~bench.run.model.build_network`), the same
SGD, the same loss (mean over the global batch = the product's on one device) and the same torch
threads (:func:`bench.run.threads.set_cpu_threads`). What they leave out: metrics, logging, the
per-step breakdown, the epoch barriers, the result JSON. Bare Lightning trains with Lightning's
default automatic optimization; the product uses manual optimization (the same zero_grad, backward
and step in its training_step, without the automatic loop's closure; docs/performance.md).

Throughput is timed like the product's ``throughput_img_s``: training images of all epochs /
sum over epochs of (epoch start to the end of its last step), host clock, the device
synchronised at both ends.
"""

from __future__ import annotations

import functools
import time
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.fabric.utilities.seed import pl_worker_init_function

from bench.core.config import BenchConfig
from bench.data import datapaths, staging
from bench.data.datamodule import CifarDataModule, normalize
from bench.run import threads
from bench.run.model import apply_device_settings, build_network


def _device(config: BenchConfig) -> torch.device:
    return torch.device("cuda", 0) if config.accelerator == "gpu" else torch.device("cpu")


def _now(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def median_step_s(epochs: list[list[float]]) -> float | None:
    """Median over epochs of each epoch's median step time (s), from host time stamps: per epoch its
    start, then the end of each step. Defined as the product's per-step breakdown ``step_s`` (end of
    the previous step, or the epoch start, to the end of this one), so all sides compare alike; a
    median is robust to the bursts of other load that move a mean (pure; None without steps)."""
    medians = [float(np.median(np.diff(stamps))) for stamps in epochs if len(stamps) > 1]
    return float(np.median(medians)) if medians else None


def prepare(config: BenchConfig) -> CifarDataModule:
    """Threads, device settings and the set-up datamodule, as the product's run does them."""
    workers = threads.loader_workers(config)
    threads.set_cpu_threads(config, workers)
    apply_device_settings(config)
    staging.ensure_data(config)
    dm = CifarDataModule(config, num_workers=workers)
    dm.setup("fit")
    return dm


def _images(config: BenchConfig, batch, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The training step's input from a loader batch, as the product's ``on_after_batch_transfer``."""
    images, labels = batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)
    if images.dtype == torch.uint8:
        images = normalize(images)
    if config.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, labels


@torch.no_grad()
def evaluate(config: BenchConfig, net: torch.nn.Module, dm: CifarDataModule) -> dict[str, Any]:
    """Test accuracy of ``net`` on the datamodule's test set: ``{"test_correct", "test_total", "test_accuracy"}``."""
    device = next(net.parameters()).device
    net.eval()
    correct = total = 0
    for batch in dm.test_dataloader():
        images, labels = _images(config, batch, device)
        correct += int((net(images).argmax(dim=1) == labels).sum())
        total += labels.numel()
    net.train()
    return {"test_correct": correct, "test_total": total, "test_accuracy": correct / total if total else None}


def hand_written(config: BenchConfig) -> dict[str, Any]:
    """Train with a plain PyTorch loop; return ``{"train_s", "images", "optimizer_steps", test figures}``."""
    dm = prepare(config)
    device = _device(config)
    L.seed_everything(config.seed, workers=True, verbose=False)
    net = build_network(config.model).to(device)
    if config.channels_last:
        net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    loader = dm.train_dataloader()
    if loader.num_workers:  # the worker seeding Lightning adds after seed_everything(workers=True)
        loader.worker_init_fn = functools.partial(pl_worker_init_function, rank=0)
    train_s, steps, stamps = 0.0, 0, []
    for epoch in range(config.epochs):
        loader.batch_sampler.set_epoch(epoch)
        seed = datapaths.augment_seed(config.seed, epoch)
        start = _now(device)
        stamps.append([start])
        for batch in loader:
            if isinstance(batch, datapaths.IndexBatch):
                batch = dm.train_set.batch(batch.indices.to(device), seed)
            images, labels = _images(config, batch, device)
            loss = F.cross_entropy(net(images), labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
            stamps[-1].append(time.perf_counter())  # (on GPU a host time: the step's work may still be queued)
        train_s += _now(device) - start
    return {"train_s": train_s, "images": len(dm.train_set) * config.epochs, "optimizer_steps": steps,
            "median_step_s": median_step_s(stamps), **evaluate(config, net, dm)}


class BareModule(L.LightningModule):
    """The minimal LightningModule: the network, the mean cross-entropy and SGD; no metrics, no logging."""

    def __init__(self, config: BenchConfig) -> None:
        super().__init__()
        self.config = config
        self.net = build_network(config.model)
        if config.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        if isinstance(batch, datapaths.IndexBatch):
            batch = self.trainer.datamodule.device_batch(batch)
        return _images(self.config, batch, self.device)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, labels = batch
        return F.cross_entropy(self.net(images), labels)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        c = self.config
        return torch.optim.SGD(self.parameters(), lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay)


class _EpochClock(L.Callback):
    """Sum of (epoch start to the end of its last training batch), seconds; and per epoch its start
    and the end of each step (host time stamps, for :func:`median_step_s`)."""

    def __init__(self) -> None:
        self.train_s, self._start = 0.0, 0.0
        self.stamps: list[list[float]] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start = _now(trainer.strategy.root_device)
        self.stamps.append([self._start])

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self.stamps[-1].append(time.perf_counter())
        if batch_idx == trainer.num_training_batches - 1:
            self.train_s += _now(trainer.strategy.root_device) - self._start


def bare_lightning(config: BenchConfig) -> dict[str, Any]:
    """Train with a bare Lightning Trainer (defaults but no logger, checkpoint, progress bar or summary)."""
    dm = prepare(config)
    L.seed_everything(config.seed, workers=True, verbose=False)
    module, clock = BareModule(config), _EpochClock()
    trainer = L.Trainer(accelerator=config.accelerator, devices=1, precision=config.precision,
                        max_epochs=config.epochs, logger=False, callbacks=[clock], use_distributed_sampler=False,
                        limit_val_batches=0, num_sanity_val_steps=0, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, datamodule=dm)
    return {"train_s": clock.train_s, "images": len(dm.train_set) * config.epochs,
            "optimizer_steps": trainer.global_step, "median_step_s": median_step_s(clock.stamps),
            **evaluate(config, module.net, dm)}


SIDES = {"hand": hand_written, "lightning": bare_lightning}
