"""Atomic file writing: every file this package writes goes through :func:`atomic_open`.

Readers (other ranks, other jobs, a user's script) see either no file, the previous file, or the
complete new one, never a half-written file: the data go to a temporary file in the target's own
folder (same file system), are flushed and fsync'ed, then renamed onto the target (``os.replace``
is atomic on POSIX). On any error the temporary file is removed and the target is untouched.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator


class DiskFullError(OSError):
    """No space (or quota) left where a file was being written; the message names the folder."""


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", make_parents: bool = True,
                exclusive: bool = False) -> Iterator[IO]:
    """Open a temporary file for writing that replaces ``path`` when the block ends without error.

    Args:
        path: the target file. mode: "w" (text, UTF-8) or "wb".
        make_parents: create the target's folder first.
        exclusive: first writer wins: never replace an existing ``path`` (``os.link`` is atomic
            and fails on an existing name); used for run records that several processes may race to write.

    Raises:
        DiskFullError: the device is full (ENOSPC/EDQUOT); nothing is left behind.
        FileExistsError: ``exclusive`` and ``path`` exists (nothing written).
        OSError: the folder cannot be created or written (nothing is left behind).
    """
    target = Path(path)
    tmp = None
    try:
        if make_parents:
            target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results and caches are shared files
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        if exclusive:
            os.link(tmp, target)
            os.unlink(tmp)
        else:
            os.replace(tmp, target)
    except OSError as err:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFullError(err.errno, f"no space left on the device of {target.parent} (writing {target.name}): "
                                           "free space there or choose another folder (--out, --cache-dir or "
                                           "BENCH_CACHE)", str(target.parent)) from err
        raise
    except BaseException:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_open`) and return the path."""
    with atomic_open(path, "wb") as handle:
        handle.write(data)
    return Path(path)


class FolderIsAFile(OSError):
    """A path meant to be a folder names an existing file (the message names it)."""


def folder_argument(text: str) -> Path:
    """argparse ``type`` of a folder option: the path, or an error for an empty one (``Path("")`` is the
    current folder, so ``--out ""`` would silently write there).

    Raises:
        argparse.ArgumentTypeError: ``text`` is empty or blank.
    """
    if not text.strip():
        raise argparse.ArgumentTypeError("empty: name a folder, new or existing")
    return Path(text)


def writable_folder(path: str | os.PathLike) -> Path:
    """Make ``path`` a folder (with its parents) and check that a file can be created in it; return it.

    A private temporary file is the probe (gone when closed), so processes may check at the same time.

    Raises:
        FolderIsAFile: ``path`` is an existing file.
        OSError: the folder cannot be made or written (read-only, a file on its path, no permission).
    """
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise FolderIsAFile(errno.EEXIST, "is a file", str(folder))
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=folder):
        pass
    return folder


def atomic_torch_save(obj, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename onto ``path``
    (:func:`atomic_open`); readers never see half a file."""
    import torch  # (here: the rest of this module is needed before torch is imported)

    with atomic_open(path, "wb") as f:
        torch.save(obj, f)
