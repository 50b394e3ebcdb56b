"""Which images each rank trains and tests on: class-balanced subsets, global batches, rank shards.

Sampling is strong scaling: an epoch is one permutation of the training set (the same on every
rank), cut into global batches of ``global_batch_size`` images (the last one may be smaller);
rank r takes its contiguous share of every global batch. Every case therefore makes
ceil(N / global batch) optimizer steps per epoch and sees every training image exactly once.
"""

from __future__ import annotations

import torch
from torch.utils.data import Sampler

from bench.data.sources import DataError


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
