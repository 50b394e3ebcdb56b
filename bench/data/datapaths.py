"""The ``pil`` and ``device`` data paths (config ``data_path``); ``uint8`` lives in :mod:`bench.data.datamodule`.

* ``pil``: the classic torchvision CIFAR-10 recipe. Like ``torchvision.datasets.CIFAR10`` each
  image is kept as an HWC uint8 array and turned into a PIL Image per sample; the tutorial's
  PIL transforms (crop, flip, ToTensor, Normalize) run per sample in the loader workers, so
  batches arrive as normalised float32.
* ``device``: the way the fastest CIFAR-10 trainers (airbench, hlb-cifar10) feed the GPU. The
  uint8 training set is moved once to the training device; the loader yields only index
  batches (:class:`IndexBatch`), and each batch is gathered, cropped and flipped there in one
  batched operation (:func:`random_crop_flip`) with a seeded generator on that device.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

PADDING = 4  # pixels of zero padding around each image before the random 32x32 crop


def pil_train_transform(mean: tuple[float, ...], std: tuple[float, ...]) -> transforms.Compose:
    """The tutorial's per-image training transform on a PIL Image: random 32x32 crop of the image
    zero-padded by 4 pixels, horizontal flip (p=0.5), ToTensor (float32 in [0, 1]), Normalize."""
    return transforms.Compose([transforms.RandomCrop(32, padding=PADDING), transforms.RandomHorizontalFlip(),
                               transforms.ToTensor(), transforms.Normalize(mean, std)])


def pil_test_transform(mean: tuple[float, ...], std: tuple[float, ...]) -> transforms.Compose:
    """Per-image test transform on a PIL Image: ToTensor then Normalize (no augmentation)."""
    return transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean, std)])


class PilImages(Dataset):
    """Images as torchvision's CIFAR10 holds them, with a PIL-based per-image transform.

    Args:
        images: uint8 (N, 3, 32, 32); kept as one HWC array (N, 32, 32, 3), as CIFAR10.data is.
        labels: int64 (N,). transform: takes a PIL Image (e.g. :func:`pil_train_transform`).

    Items are (transform(PIL Image), int64 label): float32 (3, 32, 32) with the transforms above.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform) -> None:
        self.data = images.permute(0, 2, 3, 1).contiguous().numpy()
        self.labels, self.transform = labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(Image.fromarray(self.data[i])), self.labels[i]


def draw_crop_flip(n: int, padding: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random crop offsets and flips for ``n`` images, drawn from ``generator`` on its device.

    Returns:
        ``(top, left, flip)``, each (n, 1): offsets int64 uniform in [0, 2 * padding] (pixels),
        flip bool with p = 0.5.
    """
    device = generator.device
    top = torch.randint(0, 2 * padding + 1, (n, 1), device=device, generator=generator)
    left = torch.randint(0, 2 * padding + 1, (n, 1), device=device, generator=generator)
    flip = torch.rand((n, 1), device=device, generator=generator) < 0.5
    return top, left, flip


def crop_flip(images: torch.Tensor, padding: int, top: torch.Tensor, left: torch.Tensor,
              flip: torch.Tensor) -> torch.Tensor:
    """Crop each zero-padded image at (top, left) and mirror it where ``flip``, in one indexing operation.

    Args:
        images: (B, C, H, W) of any dtype (uint8 here) on any device.
        padding: pixels of zero padding on each side (>= 0), as ``RandomCrop(padding=...)`` fills.
        top, left: int64 (B, 1) offsets in [0, 2 * padding]; flip: bool (B, 1); on ``images``' device.

    Returns:
        Tensor of the same dtype, device and shape (B, C, H, W).
    """
    b, c, h, w = images.shape
    device = images.device
    padded = F.pad(images, (padding,) * 4)
    rows = top + torch.arange(h, device=device)  # (B, H) rows of each crop
    cols = left + torch.arange(w, device=device)  # (B, W) columns of each crop
    cols = torch.where(flip, cols.flip(1), cols)  # a flipped crop reads its columns backwards
    batch = torch.arange(b, device=device)[:, None, None, None]
    channel = torch.arange(c, device=device)[None, :, None, None]
    return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]


def random_crop_flip(images: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Random crop of each zero-padded image and a horizontal flip with p=0.5, batched: every image
    gets its own offsets and flip (:func:`draw_crop_flip` from ``generator``, which must live on
    ``images``' device), applied by :func:`crop_flip`. Returns the shape and dtype of ``images``."""
    return crop_flip(images, padding, *draw_crop_flip(len(images), padding, generator))


@functools.lru_cache(maxsize=64)  # asked for every step (bench.data.datamodule.device_batch); SeedSequence costs ~8 us
def augment_seed(seed: int, epoch: int) -> int:
    """A 64-bit generator seed of an epoch's crops and flips from (config seed, epoch) via numpy's
    SeedSequence: every epoch draws new ones, a rerun the same ones. Not the rank's: the device path
    draws per image, so every world size trains the same augmented global batches."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1, np.uint64)[0])


def worker_base_seed(seed: int, rank: int) -> int:
    """A 63-bit seed of the training loader's generator on ``rank`` (its workers' base seeds come from
    it), from (config seed, rank) via numpy's SeedSequence; kept apart from :func:`augment_seed`."""
    return int(np.random.SeedSequence([seed, rank], spawn_key=(1,)).generate_state(1, np.uint64)[0] >> 1)


class IndexBatch(NamedTuple):
    """A training batch of the device path: positions in :class:`DeviceTrainSet`.

    A named tuple, so Lightning moves ``indices`` (int64 (B,)) to the device like any batch.
    """

    indices: torch.Tensor


def _collate_indices(indices: list[int]) -> IndexBatch:
    return IndexBatch(torch.tensor(indices, dtype=torch.int64))


def index_loader(n: int, batch_sampler) -> DataLoader:
    """A DataLoader yielding :class:`IndexBatch` for each index list of ``batch_sampler``.

    No workers: it only copies a list of ints; ``range(n)`` as the data set maps i to i.
    """
    return DataLoader(range(n), batch_sampler=batch_sampler, collate_fn=_collate_indices, num_workers=0)


class DeviceTrainSet:
    """The uint8 training set, moved once to the training device and augmented there per batch.

    Each epoch draws one crop and flip per *image* (:func:`draw_crop_flip` for all N images at once,
    from the epoch's seed); a batch gathers its images' draws. So what an image looks like in an epoch
    does not depend on the batch or the rank it lands in: one device and any number of DDP ranks train
    the same augmented global batches.

    Args:
        images: uint8 (N, 3, 32, 32); labels: int64 (N,). Both start on the CPU and move to the
            device of the first batch asked for (inside the timed fit: a one-off copy).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels
        self._draws: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # (top, left, flip), (N, 1) each
        self._seed: int | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, indices: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Images uint8 (B, 3, 32, 32), randomly cropped and flipped, and labels int64 (B,) of
        ``indices`` (int64 (B,)), on the device of ``indices``.

        ``seed`` (see :func:`augment_seed`) draws the epoch's crops and flips of all images when it
        changes (a new epoch): 3 N random numbers on the device, once.
        """
        device = indices.device
        if self.images.device != device:
            self.images, self.labels = self.images.to(device), self.labels.to(device)
        if self._seed != seed or self._draws is None or self._draws[0].device != device:
            generator = torch.Generator(device=device).manual_seed(seed)
            self._draws, self._seed = draw_crop_flip(len(self.labels), PADDING, generator), seed
        top, left, flip = (d[indices] for d in self._draws)
        return crop_flip(self.images[indices], PADDING, top, left, flip), self.labels[indices]
