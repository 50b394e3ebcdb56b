"""The timing callback: epoch time excludes validation, fit time includes it; process wall clock."""

from __future__ import annotations

import time

import pytest
import torch

from bench.core.config import make_config
from bench.data.datamodule import CifarDataModule
from bench.measure.timing import TrainingTimer, process_start_time, wall_seconds
from bench.run import training
from bench.run.model import CifarModule

SLEEP_S = 1.5  # per validation step: far above the 4 tiny training steps of an epoch


class SlowValidation(CifarModule):
    def validation_step(self, batch, batch_idx):
        time.sleep(SLEEP_S)
        return super().validation_step(batch, batch_idx)


def test_validation_is_excluded_from_epoch_time(tmp_path):
    config = make_config("smoke", data="synthetic", train_samples=256, test_samples=100, eval_batch_size=100,
                         epochs=2, val_every_n_epochs=1, global_batch_size=64, out_dir=str(tmp_path))
    torch.set_num_threads(1)  # no OpenMP oversubscription when the machine is busy
    timer = TrainingTimer()
    trainer = training.build_trainer(config, "t", [timer])
    trainer.fit(SlowValidation(config), datamodule=CifarDataModule(config))
    assert len(timer.epoch_train_s) == 2 and timer.steps == 8
    # each epoch validates once (1 batch of 100): SLEEP_S inside fit, outside the epoch clocks
    assert all(t < SLEEP_S for t in timer.epoch_train_s), timer.epoch_train_s
    assert timer.fit_s >= sum(timer.epoch_train_s) + 2 * SLEEP_S


def test_process_start_is_before_now_and_plausible():
    start = process_start_time()
    assert 0 < time.time() - start < 24 * 3600
    assert wall_seconds() == pytest.approx(time.time() - start, abs=1.0)
