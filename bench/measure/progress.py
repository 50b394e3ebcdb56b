"""Progress a person can follow, kept out of the measurement.

* :func:`bar`: a tqdm bar for the first decode of a data set (about 17 s for the 60,000 JPEGs on
  2 cores); drawn only on a terminal. Where stderr is a pipe (the suite's child processes, a
  Slurm job's output file) the decode says one line at its start and one at its end instead.
* :class:`EpochProgress`: one line per training epoch on global rank 0, e.g.
  ``baseline: epoch 1/2 done: 782 steps, 18.1 s, 2763 images/s``. It uses the epoch time the
  :class:`bench.measure.timing.TrainingTimer` has already measured (after its barrier and device sync),
  reads no metric and has no per-step hook, so it adds no device synchronisation; it runs after
  the epoch's clock stopped. Lightning's own progress bar stays off: it reads the
  ``prog_bar=True`` metrics at every refresh, a device sync per step on GPU.
"""

from __future__ import annotations

import sys
import time

import lightning as L
from tqdm import tqdm

from bench.measure.timing import TrainingTimer


def say(text: str) -> None:
    """One progress line on stdout, flushed at once (the suite relays the child's lines as they come)."""
    print(text, flush=True)


def bar(**kwargs) -> tqdm:
    """A tqdm bar on stderr, drawn only when stderr is a terminal (a pipe gets no ``\\r`` updates)."""
    return tqdm(file=sys.stderr, disable=not sys.stderr.isatty(), dynamic_ncols=True, mininterval=0.5, **kwargs)


class EpochProgress(L.Callback):
    """Prints a start line and one line per finished training epoch on global rank 0 (see module doc).

    Args:
        timer: the run's TrainingTimer; its ``epoch_train_s`` (s) is read, never re-measured.
        label: what is training, e.g. the case name.
    """

    def __init__(self, timer: TrainingTimer, label: str) -> None:
        self.timer, self.label = timer, label
        self._started = 0.0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            self._started = time.perf_counter()
            say(f"{self.label}: training {trainer.max_epochs} epoch(s) of {trainer.num_training_batches} steps "
                f"on {trainer.world_size} rank(s)")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or not self.timer.epoch_train_s:
            return
        seconds = self.timer.epoch_train_s[-1]
        images = sum(getattr(trainer.datamodule, "global_batch_sizes", None) or [])
        rate = f", {images / seconds:.0f} images/s" if images and seconds else ""
        say(f"{self.label}: epoch {len(self.timer.epoch_train_s)}/{trainer.max_epochs} done: "
            f"{trainer.num_training_batches} steps, {seconds:.1f} s{rate} "
            f"({time.perf_counter() - self._started:.0f} s since training started)")
