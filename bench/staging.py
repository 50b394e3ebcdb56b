"""Data staging before any process group exists: the data set decoded once into the cache, under a
file lock, so concurrent ranks wait instead of decoding twice, and a bad data set fails every rank
with a clear error instead of leaving ranks waiting in a collective.
"""

from __future__ import annotations

from filelock import FileLock

from bench.config import BenchConfig
from bench.cache import cache_path, prepare_cache
from bench.sources import DataError


def ensure_data(config: BenchConfig) -> None:
    """Decode the data set into the cache once (under a file lock, so concurrent ranks wait).

    Runs before any process group exists, so a bad data set fails every rank with a clear
    error and never leaves ranks waiting in a collective.

    Raises:
        bench.sources.DataError: missing, unreadable or corrupt data.
    """
    if config.data == "synthetic":
        return
    path = cache_path(config)
    if path.is_file():  # staged ahead (make data): jobs only read, the folder may be read-only
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(f"{path}.lock", timeout=3600)
        lock.acquire()
    except OSError as err:
        raise DataError(f"cannot use the data cache folder {path.parent}: {err.strerror}; set --cache-dir or "
                        "BENCH_CACHE to a writable folder, or stage the cache ahead with `make data`") from err
    try:
        prepare_cache(config, path)
    finally:
        lock.release()
