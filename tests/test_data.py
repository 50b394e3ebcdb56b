"""Samplers (strong scaling, exact coverage), subsets, cache (atomic, reused, concurrent)."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import lightning as L
import pytest
import torch

from bench.core import files
from bench.core.config import make_config
from bench.data import cache as data_cache  # (not `cache`: the fixture of that name is the cache folder)
from bench.data import datamodule
from bench.data.sampling import GlobalBatchSampler, balanced_subset, global_batch_sizes, shard_bounds
from bench.data.sources import DataError
from tests.conftest import run_cli, write_image_tree


def test_global_batch_sizes_keep_the_partial_last_batch():
    assert global_batch_sizes(10, 4) == [4, 4, 2]
    assert global_batch_sizes(8, 4) == [4, 4]


def test_shards_cover_everything_once_and_differ_by_at_most_one():
    bounds = [shard_bounds(10_000, r, 3) for r in range(3)]
    assert bounds == [(0, 3334), (3334, 6667), (6667, 10_000)]


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_every_world_size_trains_the_same_global_batches(world):
    n, batch = 1000, 96  # 10 full batches and one of 40 images
    single = list(GlobalBatchSampler(n, batch, 0, 1, seed=7))
    ranks = [list(GlobalBatchSampler(n, batch, r, world, seed=7)) for r in range(world)]
    assert all(len(r) == len(single) == 11 for r in ranks)  # same optimizer steps per epoch
    for step, global_batch in enumerate(single):
        assert sum((r[step] for r in ranks), []) == global_batch
    seen = sorted(i for r in ranks for b in r for i in b)
    assert seen == list(range(n))  # each image exactly once per epoch


def test_epochs_permute_differently_but_reproducibly():
    s = GlobalBatchSampler(100, 10, 0, 1, seed=1)
    first = list(s)
    s.set_epoch(1)
    assert list(s) != first
    s.set_epoch(0)
    assert list(s) == first


class _Orders(L.Callback):
    """The index batches each epoch of a real fit trained on (device data path: batches are indices)."""

    def __init__(self, dm: datamodule.CifarDataModule) -> None:
        self.orders: list[list[int]] = []
        make_batch = dm.device_batch

        def record(batch):
            self.orders[-1] += batch.indices.tolist()
            return make_batch(batch)

        dm.device_batch = record

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.orders.append([])


def test_lightning_gives_each_epoch_its_own_order():
    """Lightning sets the epoch of ``loader.batch_sampler.sampler`` only; before the sampler was held
    there, every epoch of every run trained in epoch 0's order (found by the parity benchmark)."""
    from bench.run.model import CifarModule

    config = make_config("smoke", data="synthetic", data_path="device", train_samples=96, test_samples=10, epochs=3,
                         global_batch_size=32)
    dm = datamodule.CifarDataModule(config, num_workers=0)
    orders = _Orders(dm)
    trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=3, logger=False, callbacks=[orders],
                        use_distributed_sampler=False, limit_val_batches=0, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(CifarModule(config), datamodule=dm)
    assert [sorted(o) for o in orders.orders] == [list(range(96))] * 3  # each image once per epoch
    assert len({tuple(o) for o in orders.orders}) == 3
    sampler = dm.train_dataloader().batch_sampler
    for epoch, order in enumerate(orders.orders):
        sampler.set_epoch(epoch)
        assert sum(list(sampler), []) == order  # reproducible: the seeded permutation of that epoch


def test_loader_worker_seeds_do_not_depend_on_the_global_rng():
    config = make_config("smoke", data="synthetic", data_path="uint8", train_samples=64, test_samples=10)
    dm = datamodule.CifarDataModule(config, num_workers=1)
    dm.setup("fit")
    seeds = []
    for draws in (0, 5):
        torch.manual_seed(0)
        torch.rand(draws)  # other code drawing random numbers before the loader starts
        seeds.append(iter(dm.train_dataloader())._base_seed)
    assert seeds[0] == seeds[1]


def test_last_batch_smaller_than_world_is_refused():
    with pytest.raises(DataError, match="fewer than the 4 ranks"):
        GlobalBatchSampler(102, 10, 0, 4, seed=0)


def test_balanced_subset_takes_each_class_evenly():
    labels = torch.arange(10).repeat(50)
    idx = balanced_subset(labels, 25)
    counts = labels[idx].bincount(minlength=10).tolist()
    assert counts == [3] * 5 + [2] * 5 and idx.tolist() == sorted(idx.tolist())
    assert len(balanced_subset(labels, 0)) == 500
    with pytest.raises(DataError, match="only 500"):
        balanced_subset(labels, 501)


@pytest.mark.parametrize("case", ["baseline", "ddp", "dp"])  # dp: refused too where this machine would skip it
def test_run_refuses_more_samples_than_the_data_set_holds_before_anything_runs(tmp_path, cache, case):
    tree = write_image_tree(tmp_path / "tree", per_class=(2, 1))  # 20 training images, 10 test images
    out = tmp_path / "out"
    proc = run_cli("run", "--case", case, "--preset", "smoke", "--data", str(tree), "--train-samples", "640",
                   "--test-samples", "11", "--out", str(out))
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "--train-samples 640: this data set's split holds only 20 images" in proc.stderr
    assert "; and --test-samples 11: this data set's split holds only 10 images" in proc.stderr  # both at once
    assert "Traceback" not in proc.stderr and "rank 1" not in proc.stdout + proc.stderr
    assert not list(out.glob("*.json")) if out.exists() else True


def test_run_says_a_missing_gpu_before_it_reads_the_data(tmp_path, cache):
    """--accelerator gpu on this CPU machine: the GPU is refused first (a first run would decode the data)."""
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: --accelerator gpu is not refused here")
    tree = write_image_tree(tmp_path / "tree", per_class=(2, 1))
    proc = run_cli("run", "--case", "baseline", "--preset", "smoke", "--accelerator", "gpu", "--data", str(tree),
                   "--train-samples", "640", "--out", str(tmp_path / "out"))
    assert proc.returncode == 2 and "--accelerator gpu needs 1 usable CUDA device(s)" in proc.stderr, proc.stderr[-2000:]
    assert "--train-samples" not in proc.stderr and not cache.exists()


def test_cache_is_written_atomically_and_reused(tmp_path, monkeypatch):
    tree = write_image_tree(tmp_path / "tree", per_class=(2, 1))
    config = make_config("smoke", data=str(tree), cache_dir=str(tmp_path / "cache"))
    path = data_cache.prepare_cache(config)
    assert path.is_file() and not list(path.parent.glob("*.tmp"))
    monkeypatch.setattr(data_cache, "decode_source", lambda c: pytest.fail("decoded again"))
    assert data_cache.prepare_cache(config) == path
    loaded = data_cache.load_decoded(config)
    assert loaded.train_images.shape == (20, 3, 32, 32) and loaded.train_images.dtype == torch.uint8


def test_failed_cache_write_leaves_no_file(tmp_path, monkeypatch):
    target = tmp_path / "c" / "x.pt"

    def broken(obj, f):
        f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(OSError):
        files.atomic_torch_save({"a": 1}, target)
    assert list(target.parent.iterdir()) == []


def _prepare(args):
    from bench.data import staging

    tree, cache_folder = args
    config = make_config("smoke", data=tree, cache_dir=cache_folder)
    staging.ensure_data(config)
    return data_cache.load_decoded(config).train_images.shape[0]


def test_concurrent_ranks_build_and_read_one_cache(tmp_path):
    tree = write_image_tree(tmp_path / "tree", per_class=(3, 1))
    with mp.get_context("spawn").Pool(3) as pool:
        sizes = pool.map(_prepare, [(str(tree), str(tmp_path / "cache"))] * 3)
    assert sizes == [30, 30, 30]
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 1


def test_cache_key_changes_when_the_source_changes(tmp_path):
    tree = write_image_tree(tmp_path / "tree", per_class=(1, 1))
    config = make_config("smoke", data=str(tree), cache_dir=str(tmp_path / "cache"))
    before = data_cache.cache_path(config)
    write_image_tree(tmp_path / "tree", per_class=(2, 1))
    assert data_cache.cache_path(config) != before


def test_train_augmentation_keeps_uint8_and_shape():
    image = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    out = datamodule.train_transform()(image)
    assert out.shape == (3, 32, 32) and out.dtype == torch.uint8
    batch = datamodule.normalize(torch.full((2, 3, 32, 32), 255, dtype=torch.uint8))
    expected = (1 - torch.tensor(datamodule.CIFAR10_MEAN)) / torch.tensor(datamodule.CIFAR10_STD)
    assert torch.allclose(batch[0, :, 0, 0], expected)


def test_synthetic_is_seeded(tmp_path: Path):
    a = data_cache.synthetic(make_config("smoke", data="synthetic", train_samples=50, test_samples=10))
    b = data_cache.synthetic(make_config("smoke", data="synthetic", train_samples=50, test_samples=10))
    c = data_cache.synthetic(make_config("smoke", data="synthetic", train_samples=50, test_samples=10, seed=1))
    assert torch.equal(a.train_images, b.train_images) and a.train_images.shape == (50, 3, 32, 32)
    assert torch.equal(a.test_labels, b.test_labels) and a.test_images.shape == (10, 3, 32, 32)
    assert not torch.equal(a.train_images, c.train_images)  # the seed, not a constant, decides
    # that a run on it is marked (accuracy_meaningful false) is checked end to end in test_runs.py


def test_unwritable_cache_folder_is_a_clear_error(tmp_path, monkeypatch):
    from bench.data import staging

    tree = write_image_tree(tmp_path / "tree", per_class=(1, 1))
    config = make_config("smoke", data=str(tree), cache_dir=str(tmp_path / "cache"))
    monkeypatch.setattr(Path, "mkdir", lambda *a, **k: (_ for _ in ()).throw(PermissionError(13, "Permission denied")))
    with pytest.raises(DataError, match="cannot use the data cache folder.*BENCH_CACHE"):
        staging.ensure_data(config)


def test_staged_cache_is_only_read(tmp_path, monkeypatch):
    from bench.data import staging

    tree = write_image_tree(tmp_path / "tree", per_class=(1, 1))
    config = make_config("smoke", data=str(tree), cache_dir=str(tmp_path / "cache"))
    data_cache.prepare_cache(config)
    (tmp_path / "cache").chmod(0o555)  # a read-only staged cache: no lock file may be needed
    try:
        monkeypatch.setattr(data_cache, "decode_source", lambda c: pytest.fail("decoded again"))
        staging.ensure_data(config)
        assert data_cache.load_decoded(config).train_images.shape == (10, 3, 32, 32)
    finally:
        (tmp_path / "cache").chmod(0o755)


def test_data_prepare_decodes_once_and_refuses_what_it_cannot_stage(tmp_path):
    tree = write_image_tree(tmp_path / "tree", per_class=(1, 1))
    folder = tmp_path / "c"
    first = run_cli("data", "prepare", "--data", str(tree), "--cache-dir", str(folder))
    assert first.returncode == 0 and "decoding" in first.stderr + first.stdout, first.stderr[-2000:]
    path = Path(first.stdout.split("cache: ")[1].strip())
    assert path.parent == folder and path.is_file()
    stamp = path.stat().st_mtime_ns
    again = run_cli("data", "prepare", "--data", str(tree), "--cache-dir", str(folder))
    assert again.returncode == 0 and "decoding" not in again.stderr + again.stdout
    assert path.stat().st_mtime_ns == stamp  # found, not decoded again

    synthetic = run_cli("data", "prepare", "--data", "synthetic")
    assert synthetic.returncode == 2 and "synthetic data is made by each run" in synthetic.stderr
    unnamed = run_cli("data", "prepare", env={"BENCH_DATA": ""})
    assert unnamed.returncode == 2 and "name the data set with --data PATH" in unnamed.stderr
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    refused = run_cli("data", "prepare", "--data", str(tree), "--cache-dir", str(blocked / "cache"))
    assert refused.returncode == 2 and "cannot use the data cache folder" in refused.stderr
    assert "decoding" not in refused.stderr + refused.stdout  # the folder is checked before the data is decoded


def test_a_cache_folder_where_no_lock_file_can_be_made_fails_at_once(tmp_path):
    from bench.data import staging

    tree = write_image_tree(tmp_path / "tree", per_class=(1, 1))
    # /proc exists, but no file can be made in it: filelock alone would retry for its whole timeout (an hour)
    config = make_config("smoke", data=str(tree), cache_dir="/proc")
    with pytest.raises(DataError, match="cannot use the data cache folder /proc"):
        staging.ensure_data(config)
