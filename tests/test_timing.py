"""The timing callback: epoch time excludes validation, fit time includes it; process wall clock."""

from __future__ import annotations

import time

import lightning as L
import pytest
import torch
from torch._dynamo.utils import counters

from bench.core.config import make_config
from bench.data.datamodule import CifarDataModule
from bench.measure import timing
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


def test_steady_state_keeps_new_batch_shapes_apart():
    # 2 epochs of 1000 images; warm-up 2.0 s / 500 images; the last batch's first occurrence: 1.0 s / 100 images
    figures = timing.steady_state([4.0, 2.0], warmup_s=2.0, warmup_images=500, images_per_epoch=1000,
                                  new_shape_s=1.0, new_shape_images=100)
    assert figures["steady_throughput_img_s"] == pytest.approx(1400 / 3.0) and figures["new_shape_s"] == 1.0
    assert timing.steady_state([4.0, 2.0], 2.0, 500, 1000)["steady_throughput_img_s"] == pytest.approx(1500 / 4.0)


class GraphsPerStep(L.Callback):
    """dynamo's compiled-graph count after each training step: (epoch, batch_idx) -> new graphs in that step."""

    def __init__(self) -> None:
        self.new_graphs: dict[tuple[int, int], int] = {}
        self._last = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        graphs = counters["stats"]["unique_graphs"]
        if graphs > self._last:
            self.new_graphs[(trainer.current_epoch, batch_idx)] = graphs - self._last
        self._last = graphs


def test_a_new_batch_shapes_compile_is_kept_out_of_the_steady_state(tmp_path):
    """Issue 31 item 3: 230 images in batches of 32 are 7 full batches and one of 6. Under torch.compile
    (dynamo's eager backend: its graph captures, no C compiler) the 6-image batch compiles a new graph in
    epoch 0, after the 5 warm-up steps: that step, and no other after the warm-up, is kept out of the
    steady state; epoch 1's 6-image batch counts (and compiles nothing)."""
    config = make_config("smoke", data="synthetic", train_samples=230, test_samples=100, epochs=2,
                         global_batch_size=32, out_dir=str(tmp_path), num_workers=0)
    torch.set_num_threads(1)
    torch._dynamo.reset()
    counters.clear()
    timer, graphs = TrainingTimer(), GraphsPerStep()
    module = CifarModule(config)
    module.net.compile(backend="eager")
    training.build_trainer(config, "t", [timer, graphs]).fit(module, datamodule=CifarDataModule(config))
    compiled_after_warmup = {step for step in graphs.new_graphs if step >= (0, timing.WARMUP_STEPS)}
    assert compiled_after_warmup == {(0, 7)}, graphs.new_graphs  # the mechanism: a new shape compiles
    assert timer.new_shape_steps == [(0, 7)] and timer.new_shape_images == 6 and timer.new_shape_s > 0
    figures = timing.steady_figures(timer, 230)
    assert figures["new_shape_steps"] == [[0, 7]] and figures["new_shape_s"] == timer.new_shape_s
    rest_s = sum(timer.epoch_train_s) - timer.warmup_s - timer.new_shape_s
    assert figures["steady_throughput_img_s"] == pytest.approx((2 * 230 - 5 * 32 - 6) / rest_s)
