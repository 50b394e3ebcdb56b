"""CIFAR-10 for the benchmark: decoded-tensor cache, class-balanced subsets, samplers, DataModule.

Images are decoded once (see :mod:`bench.sources`) into uint8 tensors (N, 3, 32, 32) that stay
in memory, and cached in a cache folder of their own (the data folder may be read-only and
shared). Cache files are written to a temporary name and renamed, so concurrent ranks or jobs
never read half a file.

Sampling is strong scaling: an epoch is one permutation of the training set (the same on every
rank), cut into global batches of ``global_batch_size`` images (the last one may be smaller);
rank r takes its contiguous share of every global batch. Every case therefore makes
ceil(N / global batch) optimizer steps per epoch and sees every training image exactly once.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset
from torchvision.transforms import v2

from bench import datapaths, progress
from bench.config import BenchConfig, ConfigError
from bench.files import atomic_open
from bench.sources import DataError, Decoded, detect_kind, read_image_folder, read_official

# Per-channel mean and std of the CIFAR-10 training images, in [0, 1] units
# (computed over the 50,000 official training images; the values torchvision examples use).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CACHE_FORMAT = 2  # bump when the cache file's content changes (2: torchvision decoder)
SYNTHETIC_SIZES = (50_000, 10_000)  # train, test images of the synthetic data set


SHM = Path("/dev/shm")  # where DataLoader workers hand batches to the rank (torch's file_descriptor strategy)
PREFETCH_FACTOR = 2  # torch's default batches in flight per loader worker


def check_shared_memory(config: BenchConfig, workers: int, shm: Path = SHM) -> None:
    """Refuse to start when /dev/shm cannot hold the batches the loader workers keep in flight.

    Each worker hands its batches over in shared memory, PREFETCH_FACTOR in flight per worker;
    the largest batch is a training batch per device or a test batch (``eval_batch_size``), of
    3 x 32 x 32 values per image (uint8, or float32 on the ``pil`` path). Without the check the run
    trains and then fails later with a bus error or "unable to allocate shared memory".

    Raises:
        ConfigError: naming /dev/shm, its free and needed size, and the fixes.
    """
    if workers <= 0 or not shm.is_dir():
        return
    per_image = 3 * 32 * 32 * (4 if config.data_path == "pil" else 1)
    need = workers * PREFETCH_FACTOR * max(config.per_device_batch_size, config.eval_batch_size) * per_image
    free = os.statvfs(shm).f_bavail * os.statvfs(shm).f_frsize
    if free < need:
        raise ConfigError(
            f"{shm} has {free / 2**20:.1f} MiB free but {workers} loader worker(s) need about {need / 2**20:.1f} MiB "
            f"for the batches in flight: give the job a bigger {shm} (docker/podman --shm-size=1g, or a bigger "
            f"tmpfs), or use fewer workers (--num-workers 0 loads in the training process)")


def cache_dir(config: BenchConfig) -> Path:
    """The cache folder: config.cache_dir, else $BENCH_CACHE, else ~/.cache/cifar-bench."""
    return Path(config.cache_dir or os.environ.get("BENCH_CACHE") or Path.home() / ".cache" / "cifar-bench")


def _fingerprint(path: Path, kind: str, checksums: str) -> str:
    """Key of a source: its real path, size and mtime (cheap; a changed file gets a new key)."""
    real = path.resolve()
    stats = [(str(real), real.stat().st_size, real.stat().st_mtime_ns)]
    if real.is_dir():
        stats += [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(real.rglob("*")) if p.is_file()]
    text = repr((CACHE_FORMAT, kind, checksums, stats))
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def cache_path(config: BenchConfig) -> Path:
    """Path of the cache file for the config's data source (synthetic data is never cached)."""
    source = Path(config.data).expanduser()
    kind = detect_kind(source)
    return cache_dir(config) / f"cifar10-{kind}-{_fingerprint(source, kind, config.data_checksums)}.pt"


def atomic_torch_save(obj, path: Path) -> None:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename onto ``path``."""
    with atomic_open(path, "wb") as f:
        torch.save(obj, f)


def decode_source(config: BenchConfig) -> Decoded:
    """Decode the configured source without the cache (slow path; see :func:`load_decoded`)."""
    source = Path(config.data).expanduser()
    if detect_kind(source) == "official":
        return read_official(source, config.data_checksums)
    return read_image_folder(source)


def prepare_cache(config: BenchConfig, path: Path | None = None) -> Path:
    """Make sure the decoded cache of the config's source exists; return its path.

    ``path`` is :func:`cache_path` when the caller already knows it (the fingerprint stats every
    file of a folder source, so it is computed once).

    Raises:
        DataError: the source is missing, corrupt, or the cache folder is not writable.
    """
    path = path or cache_path(config)
    if path.is_file():
        return path
    started = time.perf_counter()
    progress.say(f"decoding {config.data} into the cache {path} (once; about 20 s for 60,000 JPEG or PNG images, "
                 "seconds for CIFAR-10's own pickled batches, on 2 cores; `cifar-bench data prepare` does it ahead of jobs)")
    decoded = decode_source(config)
    try:
        atomic_torch_save({"format": CACHE_FORMAT, "source": str(Path(config.data).resolve()),
                      **decoded.__dict__, "classes": list(decoded.classes)}, path)
    except OSError as err:
        raise DataError(f"cannot write the data cache {path}: {err.strerror}; set --cache-dir or BENCH_CACHE "
                        "to a writable folder") from err
    progress.say(f"decoded {len(decoded.train_labels)} training and {len(decoded.test_labels)} test images "
                 f"in {time.perf_counter() - started:.0f} s")
    return path


def synthetic(config: BenchConfig) -> Decoded:
    """Random uint8 images and labels of CIFAR-10 shape (seeded); accuracy on it means nothing."""
    gen = torch.Generator().manual_seed(config.seed)
    n_train = config.train_samples or SYNTHETIC_SIZES[0]
    n_test = config.test_samples or SYNTHETIC_SIZES[1]
    images = torch.randint(0, 256, (n_train + n_test, 3, 32, 32), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, 10, (n_train + n_test,), generator=gen)
    return Decoded(images[:n_train], labels[:n_train], images[n_train:], labels[n_train:],
                   classes=tuple(f"class{i}" for i in range(10)))


def load_decoded(config: BenchConfig, path: Path | None = None) -> Decoded:
    """The full decoded data set for the config: synthetic, or read from the cache (built if absent).

    Raises:
        DataError: as :func:`prepare_cache`, or a cache file that cannot be read.
    """
    if config.data == "synthetic":
        return synthetic(config)
    path = prepare_cache(config, path)
    try:
        blob = torch.load(path, weights_only=True)
    except (OSError, RuntimeError, EOFError) as err:
        raise DataError(f"cannot read the data cache {path} ({err}); delete it and run again") from err
    return Decoded(blob["train_images"], blob["train_labels"], blob["test_images"], blob["test_labels"],
                   classes=tuple(blob["classes"]))


def balanced_subset(labels: torch.Tensor, n: int, option: str = "n") -> torch.Tensor:
    """Indices of the first ``n`` images taken evenly over the classes (0 = all), sorted.

    Class c gets n // k images, the first n % k classes one more (k classes). ``option`` names ``n``
    in the errors (e.g. "--train-samples").

    Raises:
        DataError: more images than the split holds, or a class has fewer images than its share.
    """
    if n == 0 or n >= len(labels):
        if n > len(labels):
            raise DataError(f"{option} {n}: this data set's split holds only {len(labels)} images; "
                            f"ask for at most {len(labels)}, or 0 for all of them")
        return torch.arange(len(labels))
    classes = torch.unique(labels)
    k = len(classes)
    picked = []
    for i, c in enumerate(classes.tolist()):
        share = n // k + (1 if i < n % k else 0)
        idx = torch.nonzero(labels == c).flatten()[:share]
        if len(idx) < share:
            raise DataError(f"{option} {n}: class {c} has only {len(idx)} images, {share} needed for a balanced "
                            f"subset; ask for fewer, or 0 for all of them")
        picked.append(idx)
    return torch.sort(torch.cat(picked)).values


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


def global_batch_sizes(n: int, global_batch: int) -> list[int]:
    """Images in each global batch of an epoch over ``n`` images (last one partial if any)."""
    sizes = [global_batch] * (n // global_batch)
    return sizes + [n % global_batch] if n % global_batch else sizes


def shard_bounds(size: int, rank: int, world: int) -> tuple[int, int]:
    """[start, stop) of rank's contiguous share of ``size`` items; shares differ by at most 1."""
    base, extra = divmod(size, world)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


class EpochPermutation(Sampler):
    """A seeded permutation of ``range(n)`` that changes with the epoch: ``randperm(n)`` from a
    generator seeded with ``seed + epoch``, the same on every rank and in every rerun.

    It is the ``sampler`` of :class:`GlobalBatchSampler` because that is where Lightning looks:
    ``lightning.fabric.utilities.data._set_sampler_epoch`` calls ``set_epoch`` on ``loader.sampler``
    and ``loader.batch_sampler.sampler``, never on a batch sampler itself (lightning 2.x).
    """

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        """Select epoch ``epoch``'s permutation (Lightning calls it at each epoch start)."""
        self.epoch = epoch

    def order(self) -> torch.Tensor:
        """This epoch's permutation, int64 (n,)."""
        return torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + self.epoch))

    def __iter__(self):
        return iter(self.order().tolist())

    def __len__(self) -> int:
        return self.n


class GlobalBatchSampler:
    """Yields this rank's index list for each global batch of a seeded per-epoch permutation.

    Args:
        n: training images. global_batch: images per optimizer step over all ranks.
        rank, world: this rank and the world size. seed: base of the per-epoch permutation
            (:class:`EpochPermutation`, held as ``sampler`` so that Lightning sets its epoch).

    Raises:
        DataError: the last global batch is smaller than the world size (a rank would get none).
    """

    def __init__(self, n: int, global_batch: int, rank: int, world: int, seed: int) -> None:
        self.sizes = global_batch_sizes(n, global_batch)
        if self.sizes[-1] < world:
            raise DataError(f"the last global batch of an epoch has {self.sizes[-1]} images, fewer than the "
                            f"{world} ranks; change --train-samples or --global-batch-size")
        self.n, self.global_batch, self.rank, self.world = n, global_batch, rank, world
        self.sampler = EpochPermutation(n, seed)

    def set_epoch(self, epoch: int) -> None:
        """Select that epoch's permutation (the same as ``self.sampler.set_epoch``)."""
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.sizes)

    def __iter__(self):
        order = self.sampler.order()
        for i, size in enumerate(self.sizes):
            start, stop = shard_bounds(size, self.rank, self.world)
            offset = i * self.global_batch
            yield order[offset + start: offset + stop].tolist()


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
    chooses how training batches are made (see :mod:`bench.datapaths`); on the ``device`` path
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
