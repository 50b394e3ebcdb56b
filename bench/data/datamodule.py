"""CIFAR-10 for one rank: the LightningDataModule, its transforms, the per-channel normalisation of
batches (:func:`normalize`) and the shared-memory check of loader workers (:func:`check_shared_memory`).

The decoded tensors come from :mod:`bench.data.cache` (a source's cache, or synthetic data); which
images each rank sees, from :mod:`bench.data.sampling` (class-balanced subsets, global batches split
over the ranks); how training batches are made, from :mod:`bench.data.datapaths`.
"""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision.transforms import v2

from bench.core.config import BenchConfig, ConfigError
from bench.data import datapaths
from bench.data.cache import cache_path, load_decoded, prepare_cache
from bench.data.sampling import GlobalBatchSampler, balanced_subset, global_batch_sizes, shard_bounds
from bench.data.sources import DataError, Decoded

# Per-channel mean and std of the CIFAR-10 training images, in [0, 1] units
# (computed over the 50,000 official training images; the values torchvision examples use).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


SHM = Path("/dev/shm")  # where DataLoader workers hand batches to the rank (torch's file_descriptor strategy)
PREFETCH_FACTOR = 2  # torch's default batches in flight per loader worker


def check_shared_memory(config: BenchConfig, workers: int, shm: Path = SHM) -> None:
    """Refuse to start when /dev/shm cannot hold the batches the loader workers keep in flight.

    Each worker hands its batches over in shared memory, PREFETCH_FACTOR in flight per worker;
    the largest batch is a training batch as the loader yields it (per device; dp's single loader
    yields the whole global batch, which DataParallel splits on the GPUs) or a test batch
    (``eval_batch_size``), of 3 x 32 x 32 values per image (uint8, or float32 on the ``pil`` path).
    Without the check the run trains and then fails later with a bus error or "unable to allocate
    shared memory".

    Raises:
        ConfigError: naming /dev/shm, its free and needed size, and the fixes.
    """
    if workers <= 0 or not shm.is_dir():
        return
    per_image = 3 * 32 * 32 * (4 if config.data_path == "pil" else 1)
    train_batch = config.global_batch_size if config.case == "dp" else config.per_device_batch_size
    need = workers * PREFETCH_FACTOR * max(train_batch, config.eval_batch_size) * per_image
    free = os.statvfs(shm).f_bavail * os.statvfs(shm).f_frsize
    if free < need:
        raise ConfigError(
            f"{shm} has {free / 2**20:.1f} MiB free but {workers} loader worker(s) need about {need / 2**20:.1f} MiB "
            f"for the batches in flight: give the job a bigger {shm} (docker/podman --shm-size=1g, or a bigger "
            f"tmpfs), or use fewer workers (--num-workers 0 loads in the training process)")


def _subsets(decoded: Decoded, config: BenchConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Training and test indices of the configured subsets (:func:`balanced_subset`).

    Raises:
        DataError: naming every option that asks for more than the data set holds (train and test at once).
    """
    picked, problems = [], []
    for labels, n, option in ((decoded.train_labels, config.train_samples, "--train-samples"),
                              (decoded.test_labels, config.test_samples, "--test-samples")):
        try:
            picked.append(balanced_subset(labels, n, option))
        except DataError as err:
            problems.append(str(err))
    if problems:
        raise DataError("; and ".join(problems))
    return picked[0], picked[1]


class AugmentedImages(Dataset):
    """Images uint8 (N, 3, 32, 32) and labels (N,) with a per-image torchvision transform.

    Items are (uint8 (3, 32, 32), int64 label); batches stay uint8 until :func:`normalize`.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: v2.Transform) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(self.images[i]), self.labels[i]


def train_transform() -> v2.Transform:
    """Per-image augmentation on uint8 (3, 32, 32): random 32x32 crop of the image zero-padded by
    4 pixels, then a horizontal flip with probability 0.5 (the standard CIFAR-10 recipe)."""
    return v2.Compose([v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip()])


def test_transform() -> v2.Transform:
    """No per-image work for test images: they are only normalised, batched (see normalize)."""
    return v2.Identity()


_AFFINE: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}  # device -> (scale, shift), (1, 3, 1, 1)


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (n, 3, 32, 32) -> float32 normalised with the CIFAR-10 mean and std.

    ``(x / 255 - mean) / std`` computed as ``x * (1 / (255 std)) - mean / std``: two in-place
    operations on the converted batch (torchvision's v2 ToDtype + Normalize took about 2.4x as long
    on a 64-image CPU batch, 2026-11-29). Applied to whole batches after they reach the device:
    per-image conversion in the loader would cost ~170 us per image on CPU.
    """
    if images.device not in _AFFINE:  # once per device: no per-step copy of the constants
        mean, std = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1), torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
        _AFFINE[images.device] = ((1 / (255 * std)).to(images.device), (mean / std).to(images.device))
    scale, shift = _AFFINE[images.device]
    return images.to(torch.float32, copy=True).mul_(scale).sub_(shift)  # (never the caller's tensor in place)


class CifarDataModule(L.LightningDataModule):
    """CIFAR-10 train/test loaders for one rank, following :class:`BenchConfig`.

    ``prepare_data`` (one process per node) builds the decoded cache; ``setup`` (every rank)
    loads it. The train loader uses :class:`GlobalBatchSampler`; the test loader gives each rank
    a contiguous shard (uneven shards allowed, no image counted twice). Set the Trainer's
    ``use_distributed_sampler=False`` so Lightning keeps these samplers. ``config.data_path``
    chooses how training batches are made (see :mod:`bench.data.datapaths`); on the ``device`` path
    the train loader yields index batches that :meth:`device_batch` turns into images.
    """

    def __init__(self, config: BenchConfig, num_workers: int | None = None) -> None:
        super().__init__()
        self.config = config
        self.num_workers = config.num_workers if num_workers is None else num_workers  # resolved (not -1)
        self.train_set: Dataset | None = None
        self.test_set: Dataset | None = None
        self.global_batch_sizes: list[int] = []  # images per global batch of an epoch, after setup
        self._cache_path: Path | None = None  # computed once (see prepare_cache)

    def _cache(self) -> Path:
        if self._cache_path is None:
            self._cache_path = cache_path(self.config)
        return self._cache_path

    def prepare_data(self) -> None:
        if self.config.data != "synthetic":
            prepare_cache(self.config, self._cache())

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        decoded = load_decoded(self.config, None if self.config.data == "synthetic" else self._cache())
        train_idx, test_idx = _subsets(decoded, self.config)
        self.global_batch_sizes = global_batch_sizes(len(train_idx), self.config.global_batch_size)
        train = decoded.train_images[train_idx], decoded.train_labels[train_idx]
        self.train_set, self.test_set = self._datasets(train, (decoded.test_images[test_idx],
                                                               decoded.test_labels[test_idx]))

    def _datasets(self, train: tuple, test: tuple) -> tuple:
        """Training and test set of the configured data path from (images, labels) pairs."""
        if self.config.data_path == "pil":
            norm = (CIFAR10_MEAN, CIFAR10_STD)
            return (datapaths.PilImages(*train, datapaths.pil_train_transform(*norm)),
                    datapaths.PilImages(*test, datapaths.pil_test_transform(*norm)))
        if self.config.data_path == "device":
            return datapaths.DeviceTrainSet(*train), AugmentedImages(*test, test_transform())
        return AugmentedImages(*train, train_transform()), AugmentedImages(*test, test_transform())

    def device_batch(self, batch: datapaths.IndexBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Device path: (uint8 images (B, 3, 32, 32), labels (B,)) gathered and augmented on the
        device of ``batch.indices``, seeded by (config seed, epoch): the same crops on every rank."""
        epoch = self.trainer.current_epoch if self.trainer is not None else 0
        return self.train_set.batch(batch.indices, datapaths.augment_seed(self.config.seed, epoch))

    def _rank_world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def loader_options(self) -> dict:
        """The DataLoader settings this rank really uses: ``num_workers`` (resolved), ``pin_memory``,
        ``persistent_workers`` (only with workers). The device path's index loader has none of them."""
        c = self.config
        workers = max(self.num_workers, 0)
        return dict(num_workers=workers, pin_memory=c.pin_memory, persistent_workers=c.persistent_workers and workers > 0)

    def train_dataloader(self) -> DataLoader:
        rank, world = self._rank_world()
        sampler = GlobalBatchSampler(len(self.train_set), self.config.global_batch_size, rank, world,
                                     self.config.seed)
        if isinstance(self.train_set, datapaths.DeviceTrainSet):
            return datapaths.index_loader(len(self.train_set), sampler)
        # The workers' base seed comes from this generator, not from the global RNG: the augmentation
        # draws then depend only on (config seed, rank), not on what else drew random numbers first
        # (a hand-written loop and Lightning draw different amounts before iterating; issue 14).
        generator = torch.Generator().manual_seed(datapaths.worker_base_seed(self.config.seed, rank))
        return DataLoader(self.train_set, batch_sampler=sampler, generator=generator, **self.loader_options())

    def test_dataloader(self) -> DataLoader:
        rank, world = self._rank_world()
        start, stop = shard_bounds(len(self.test_set), rank, world)
        shard = Subset(self.test_set, range(start, stop))
        return DataLoader(shard, batch_size=self.config.eval_batch_size, shuffle=False, **self.loader_options())

    val_dataloader = test_dataloader
