"""Data staging before any process group exists: the data set decoded once into the cache, under a
file lock, so concurrent ranks wait instead of decoding twice, and a bad data set fails every rank
with a clear error instead of leaving ranks waiting in a collective.
"""

from __future__ import annotations

from pathlib import Path

from filelock import FileLock, Timeout

from bench.core.config import BenchConfig
from bench.data.cache import cache_path, prepare_cache
from bench.data.sources import DataError

LOCK_TIMEOUT_S = 3600  # longest wait for another process decoding the same source (s); decoding takes ~20 s


def ensure_data(config: BenchConfig) -> Path | None:
    """Decode the data set into the cache once (under a file lock, so concurrent ranks wait); return the
    cache file's path (None for synthetic data, which is never cached).

    Runs before any process group exists, so a bad data set fails every rank with a clear
    error and never leaves ranks waiting in a collective.

    Raises:
        bench.data.sources.DataError: missing, unreadable or corrupt data.
    """
    if config.data == "synthetic":
        return None
    path = cache_path(config)
    if path.is_file():  # staged ahead (make data): jobs only read, the folder may be read-only
        return path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # filelock takes a lock file it cannot create for one another process holds, and would retry
        # for the whole timeout (an hour) in a read-only or pseudo folder: try to create it first
        with open(f"{path}.lock", "a"):
            pass
        lock = FileLock(f"{path}.lock", timeout=LOCK_TIMEOUT_S)
        lock.acquire()
    except OSError as err:
        raise DataError(f"cannot use the data cache folder {path.parent}: {err.strerror}; set --cache-dir or "
                        "BENCH_CACHE to a writable folder, or stage the cache ahead with `make data`") from err
    except Timeout as err:
        raise DataError(f"waited {LOCK_TIMEOUT_S} s for {path}.lock: another process has been decoding into "
                        f"{path.parent} all that time (or died holding the lock on a shared file system); "
                        "check for it, or use another --cache-dir") from err
    try:
        return prepare_cache(config, path)
    finally:
        lock.release()
