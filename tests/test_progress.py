"""Progress and noise: what a person sees while a run works, and what stays out of the measurement.

Run:  .venv/bin/python -m pytest -q tests/test_progress.py   (about 30 s on 2 cores: 2 short runs)
"""

from __future__ import annotations

from pathlib import Path

import lightning as L

from bench.measure.progress import EpochProgress
from tests.conftest import run_cli, tar_gz, write_image_tree


def test_epoch_progress_has_no_per_step_hook():
    # a per-step hook is where a device sync (a metric read) would cost time; the line per epoch
    # reads the timer's already-synchronised epoch time only
    own = {name for name in vars(EpochProgress) if name.startswith("on_")}
    assert own == {"on_train_start", "on_train_epoch_end"}
    base = {name for name in vars(L.Callback) if name.startswith("on_")}
    assert own <= base  # real Lightning hooks, not misspelt ones that would never run


def test_run_prints_decode_and_epoch_lines_and_no_inapplicable_notices(tmp_path: Path, cache: Path):
    archive = tar_gz(write_image_tree(tmp_path / "tree"), tmp_path / "tree.tar.gz")
    proc = run_cli("run", "--data", str(archive), "--epochs", "2", "--global-batch-size", "20",
                   "--train-samples", "0", "--test-samples", "0", "--out", str(tmp_path / "out"),
                   env={"SLURM_JOB_ID": ""}, timeout=300)  # as outside a Slurm job (srun may be on PATH)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert f"decoding {archive} into the cache" in out and "decoded 60 training and 20 test images" in out
    assert "baseline: training 2 epoch(s) of 3 steps on 1 rank(s)" in out
    assert "baseline: epoch 1/2 done: 3 steps" in out and "baseline: epoch 2/2 done: 3 steps" in out
    everything = out + proc.stderr
    assert "Tip:" not in everything and "litlogger" not in everything  # the logging-product advert
    assert "GPU available:" not in everything and "TPU available:" not in everything  # facts the result records
    assert "is available on your system but is not used" not in everything  # no Slurm job: not applicable


def test_bad_data_leaves_no_out_folder(tmp_path: Path, cache: Path):
    (tmp_path / "empty").mkdir()
    proc = run_cli("run", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "new" / "out"))
    assert proc.returncode == 2
    assert proc.stderr.count("cifar-bench: error: data folder") == 1
    assert not (tmp_path / "new").exists()
