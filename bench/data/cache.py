"""Decoded CIFAR-10 tensors: the cache of a data source, and seeded synthetic data.

Images are decoded once (see :mod:`bench.data.sources`) into uint8 tensors (N, 3, 32, 32) that stay in
memory, and cached in a cache folder of their own (the data folder may be read-only and shared).
Cache files are written to a temporary name and renamed (:func:`bench.core.files.atomic_torch_save`), so
concurrent ranks or jobs never read half a file; :func:`bench.data.staging.ensure_data` holds the file lock
under which one process decodes while the others wait.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import torch

from bench.core.config import BenchConfig
from bench.core.files import atomic_torch_save
from bench.data.official import read_official
from bench.data.sources import DataError, Decoded, detect_kind, read_image_folder
from bench.measure import progress

CACHE_FORMAT = 2  # bump when the cache file's content changes (2: torchvision decoder)
SYNTHETIC_SIZES = (50_000, 10_000)  # train, test images of the synthetic data set


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
