"""Training-time measurement: a Lightning callback and the process wall clock.

What each figure covers (all in seconds, measured on every rank, reported from global rank 0):

* ``fit_s``: from ``on_train_start`` to ``on_train_end``: the whole training loop, i.e. every
  epoch's training batches and data loading, plus any validation scheduled during fit. It
  excludes process start, imports, data decoding/caching, process-group set-up, model
  creation and the final test pass. This is the figure compared against baselines.
* ``epoch_train_s[i]``: from ``on_train_epoch_start`` of epoch i to the end of its last training
  batch: the training batches and the loading of their data only. Lightning 2 runs validation
  *before* ``on_train_epoch_end``, so the epoch clock stops at the last batch instead.
* ``throughput_img_s``: training images processed by all ranks together / sum(epoch_train_s).
* ``wall_s``: from the start of the (rank-0) process, read from /proc, to the moment the
  result is assembled: everything, end to end.
* Start-up apart (:func:`steady_state`): the first epoch carries one-off costs (NCCL's lazy
  connection set-up, CUDA's lazy module loading, cuDNN autotuning, DDP's bucket rebuild, loader
  workers starting). ``first_epoch_s`` is ``epoch_train_s[0]``; ``steady_epoch_s`` the mean of
  epochs 2..N (None with one epoch); ``warmup_s`` the first :data:`WARMUP_STEPS` training steps
  of the first epoch, and ``steady_throughput_img_s`` the global images/s of all training
  batches after them, so even a one-epoch preset has a steady-state figure. ``fit_s`` keeps
  everything.
* New batch shapes apart: the first step of each global batch size not seen before (after the
  warm-up) is kept out of ``steady_throughput_img_s`` too, time and images (``new_shape_steps``,
  ``new_shape_s``): e.g. the full preset's last, partial batch (50,000 = 195 x 256 + 80) compiles a
  new graph under ``--compile`` and is autotuned anew by cuDNN, once, in epoch 0. Later batches of
  that size count; the batch itself is trained as always (dropping it would change the work).

Each time stamp is taken after a barrier over all ranks and, on GPU, a device synchronize, so
it marks the moment the slowest rank got there with all queued GPU work done.
"""

from __future__ import annotations

import os
import time

import lightning as L
import torch

_IMPORT_TIME = time.time()  # fallback origin of wall_s where /proc is not available
WARMUP_STEPS = 5  # training steps at the start of the first epoch kept out of steady_throughput_img_s (steps)


def process_start_time() -> float:
    """Start of this process as a Unix time stamp (s), from /proc/self/stat and /proc/stat.

    Falls back to the time this module was imported where /proc is missing (non-Linux).
    Source: proc(5), field 22 "starttime" in clock ticks since boot; "btime" in /proc/stat.
    """
    try:
        fields = open("/proc/self/stat").read().rsplit(")", 1)[1].split()
        ticks = int(fields[19])  # field 22 overall; 2 fields precede the ")" split
        btime = next(int(line.split()[1]) for line in open("/proc/stat") if line.startswith("btime"))
        return btime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, StopIteration, IndexError):
        return _IMPORT_TIME


def wall_seconds() -> float:
    """Seconds since this process started (see :func:`process_start_time`)."""
    return time.time() - process_start_time()


class TrainingTimer(L.Callback):
    """Records ``fit_s`` and ``epoch_train_s`` (see the module docstring for what they cover).

    Attributes:
        fit_s: float seconds, or None before the end of training.
        epoch_train_s: list of float seconds, one per completed epoch.
        steps: optimizer steps taken (batches trained) over the whole fit.
        warmup_s: seconds of the first :data:`WARMUP_STEPS` steps (None when the first epoch is not
            longer than that); warmup_images: the global images of those steps.
        new_shape_steps: ``[(epoch, batch_idx), ...]`` of the steps after the warm-up whose global batch
            size was new; new_shape_s, new_shape_images: their seconds and global images.
    """

    def __init__(self) -> None:
        self.fit_s: float | None = None
        self.epoch_train_s: list[float] = []
        self.steps = 0
        self.warmup_s: float | None = None
        self.warmup_images = 0
        self._fit_start = 0.0
        self._epoch_start = 0.0
        self.new_shape_steps: list[tuple[int, int]] = []
        self.new_shape_s = 0.0
        self.new_shape_images = 0
        self._sizes_seen: set[int] = set()
        self._new_shape_start: float | None = None

    @staticmethod
    def _synchronized_now(trainer: L.Trainer) -> float:
        root = trainer.strategy.root_device
        if root.type == "cuda":
            torch.cuda.synchronize(root)
        trainer.strategy.barrier("bench-timing")
        return time.perf_counter()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._fit_start = self._synchronized_now(trainer)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_start = self._synchronized_now(trainer)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        sizes = getattr(trainer.datamodule, "global_batch_sizes", None) or []
        if batch_idx >= len(sizes) or sizes[batch_idx] in self._sizes_seen:
            return
        self._sizes_seen.add(sizes[batch_idx])  # (the same sizes on every rank: all reach the barrier)
        if trainer.current_epoch > 0 or batch_idx >= WARMUP_STEPS:  # the warm-up window has its own clock
            self._new_shape_start = self._synchronized_now(trainer)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        self.steps += 1
        if self._new_shape_start is not None:
            self.new_shape_s += self._synchronized_now(trainer) - self._new_shape_start
            self.new_shape_images += trainer.datamodule.global_batch_sizes[batch_idx]
            self.new_shape_steps.append((trainer.current_epoch, batch_idx))
            self._new_shape_start = None
        # Every rank has the same number of batches (GlobalBatchSampler), so all reach these barriers.
        if trainer.current_epoch == 0 and batch_idx == WARMUP_STEPS - 1 < trainer.num_training_batches - 1:
            self.warmup_s = self._synchronized_now(trainer) - self._epoch_start
            self.warmup_images = sum((getattr(trainer.datamodule, "global_batch_sizes", None) or [])[:WARMUP_STEPS])
        if batch_idx == trainer.num_training_batches - 1:
            self.epoch_train_s.append(self._synchronized_now(trainer) - self._epoch_start)
            self._log_epoch(trainer)

    def _log_epoch(self, trainer: L.Trainer) -> None:
        """Epoch training time (s) and global throughput (images/s) to the loggers (rank 0 writes)."""
        images = getattr(trainer.datamodule, "global_batch_sizes", None)
        metrics = {"time/epoch_train_s": self.epoch_train_s[-1]}
        if images:
            metrics["throughput/images_per_s"] = sum(images) / self.epoch_train_s[-1]
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.current_epoch)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.fit_s = self._synchronized_now(trainer) - self._fit_start


def steady_state(epoch_train_s: list[float], warmup_s: float | None, warmup_images: int,
                 images_per_epoch: int, new_shape_s: float = 0.0, new_shape_images: int = 0) -> dict:
    """Start-up apart from steady-state work (pure; all times in s, throughput in global images/s).

    Args:
        epoch_train_s: seconds per epoch; warmup_s, warmup_images: the first :data:`WARMUP_STEPS`
            steps (None/0 when not measured); images_per_epoch: global training images per epoch;
            new_shape_s, new_shape_images: the first steps of new batch sizes after the warm-up
            (:class:`TrainingTimer`), also kept out of the steady state.

    Returns:
        ``{"first_epoch_s", "steady_epoch_s", "warmup_steps", "warmup_s", "new_shape_s",
        "steady_throughput_img_s"}``, None where there is too little training to say.
    """
    later = epoch_train_s[1:]
    rest_s = sum(epoch_train_s) - warmup_s - new_shape_s if warmup_s is not None else None
    rest_images = images_per_epoch * len(epoch_train_s) - warmup_images - new_shape_images
    return {"first_epoch_s": epoch_train_s[0] if epoch_train_s else None,
            "steady_epoch_s": sum(later) / len(later) if later else None,
            "warmup_steps": WARMUP_STEPS if warmup_s is not None else None, "warmup_s": warmup_s,
            "new_shape_s": new_shape_s if warmup_s is not None else None,
            "steady_throughput_img_s": rest_images / rest_s if rest_s and rest_images > 0 and images_per_epoch
            else None}


def steady_figures(timer: TrainingTimer, images_per_epoch: int) -> dict:
    """:func:`steady_state` of a finished timer, plus ``new_shape_steps``: the ``[epoch, batch_idx]``
    steps kept out of the steady state for being the first of a new batch size (None without a warm-up)."""
    figures = steady_state(timer.epoch_train_s, timer.warmup_s, timer.warmup_images, images_per_epoch,
                           timer.new_shape_s, timer.new_shape_images)
    return {**figures, "new_shape_steps": [list(s) for s in timer.new_shape_steps] if timer.warmup_s is not None
            else None}
