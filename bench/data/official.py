"""Reading the official CIFAR-10 python pickles (``cifar-10-batches-py/`` or ``cifar-10-python.tar.gz``).

The files torchvision downloads: Python-2 pickles of dicts with b'data' uint8 (10000, 3072) in R,G,B
planes and b'labels', checked against the official MD5s taken from ``torchvision.datasets.CIFAR10``
(or a JSON file of checksums, or none with ``--data-checksums skip``). Unpickling is restricted to
the few types such a file holds, so a crafted file cannot run code.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import tarfile
from pathlib import Path

import numpy as np
import torch
from torchvision.datasets import CIFAR10

from bench.data.sources import STAGE_HINT, DataError, Decoded

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def official_md5s() -> dict[str, str]:
    """The official MD5 of every CIFAR-10 python file, from ``torchvision.datasets.CIFAR10``."""
    md5s = {name: md5 for name, md5 in CIFAR10.train_list + CIFAR10.test_list}
    md5s[CIFAR10.meta["filename"]] = CIFAR10.meta["md5"]
    md5s[CIFAR10.filename] = CIFAR10.tgz_md5
    return md5s


def expected_md5s(mode: str) -> dict[str, str] | None:
    """Checksums for ``data_checksums``: "official", "skip" (None) or a JSON file {name: md5}.

    Raises:
        DataError: the JSON file cannot be read or is not a mapping of strings.
    """
    if mode == "skip":
        return None
    if mode == "official":
        return official_md5s()
    try:
        table = json.loads(Path(mode).read_text())
    except (OSError, ValueError) as err:
        raise DataError(f"cannot read checksum file {mode}: {err}; give a JSON object {{file name: md5}}") from err
    if not isinstance(table, dict) or not all(isinstance(v, str) for v in table.values()):
        raise DataError(f"checksum file {mode} must be a JSON object {{file name: md5 hex}}")
    return table


def _check_md5(name: str, blob: bytes, md5s: dict[str, str] | None, where: Path) -> None:
    if md5s is None:
        return
    if name not in md5s:
        raise DataError(f"no expected checksum for {name} in {where}; pass --data-checksums skip to read it anyway")
    actual = hashlib.md5(blob).hexdigest()
    if actual != md5s[name]:
        raise DataError(f"checksum mismatch for {name} in {where}: md5 {actual}, expected {md5s[name]}; "
                        f"the file is corrupt or not the official one: {STAGE_HINT}")


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that can build only what the CIFAR-10 batch files hold.

    Dicts, lists, bytes/str and ints need no global; numpy arrays need exactly the three
    numpy globals below, and the dtype factory accepts only uint8; bytes written by Python 3 at
    protocol 2 need ``_codecs.encode(text, 'latin1')``. Anything else (e.g. os.system)
    raises UnpicklingError instead of running.
    """

    def find_class(self, module: str, name: str):  # noqa: D102 (pickle API)
        if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name == "_reconstruct":
            return np._core.multiarray._reconstruct
        if module == "numpy" and name == "ndarray":
            return np.ndarray
        if module == "numpy" and name == "dtype":
            return _uint8_dtype
        if module == "_codecs" and name == "encode":  # how protocol-2 pickles from Python 3 store bytes
            return _latin1_encode
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR-10 batch file")


def _latin1_encode(text, encoding="utf-8"):
    if not isinstance(text, str) or encoding != "latin1":
        raise pickle.UnpicklingError("only latin1 text-to-bytes encoding is allowed in a CIFAR-10 batch file")
    return text.encode("latin1")


def _uint8_dtype(spec, *args):
    if spec not in ("u1", b"u1", "uint8"):
        raise pickle.UnpicklingError(f"dtype {spec!r} is not allowed in a CIFAR-10 batch file (uint8 only)")
    return np.dtype("u1")


def load_batch(blob: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Decode one official batch file: images (N, 3, 32, 32) uint8 and labels (N,) int64.

    Raises:
        DataError: not a valid batch (truncated, forbidden content, wrong shapes).
    """
    try:
        entry = _RestrictedUnpickler(io.BytesIO(blob), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as err:
        raise DataError(f"{where} is not a readable CIFAR-10 batch ({type(err).__name__}: {err}); {STAGE_HINT}") from err
    data = entry.get(b"data") if isinstance(entry, dict) else None
    labels = entry.get(b"labels") if isinstance(entry, dict) else None
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == 3072):
        raise DataError(f"{where}: b'data' must be a uint8 array of shape (N, 3072); {STAGE_HINT}")
    if not (isinstance(labels, list) and len(labels) == len(data)
            and all(isinstance(v, int) and 0 <= v < 10 for v in labels)):
        raise DataError(f"{where}: b'labels' must be a list of {len(data)} ints in 0..9; {STAGE_HINT}")
    return data.reshape(-1, 3, 32, 32), np.asarray(labels, dtype=np.int64)


def _official_blobs(path: Path, md5s: dict[str, str] | None) -> dict[str, bytes]:
    """Read the raw batch files from the folder or the .tar.gz, checking MD5s."""
    names = [n for n, _ in CIFAR10.train_list + CIFAR10.test_list]
    if path.is_file():
        blob = path.read_bytes()
        # The archive's own checksum vouches for its members; without one, check each member.
        archive_key = next((k for k in (CIFAR10.filename, path.name) if md5s and k in md5s), None)
        if archive_key:
            _check_md5(archive_key, blob, md5s, path)
        try:
            with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
                members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
                missing = [n for n in names if n not in members]
                if missing:
                    raise DataError(f"archive {path} lacks {', '.join(missing)}; {STAGE_HINT}")
                blobs = {n: tar.extractfile(members[n]).read() for n in names}
        except (tarfile.TarError, OSError, EOFError) as err:
            raise DataError(f"cannot read archive {path}: {err}; {STAGE_HINT}") from err
        if not archive_key:
            for name, member_blob in blobs.items():
                _check_md5(name, member_blob, md5s, path)
        return blobs
    folder = path if path.name == CIFAR10.base_folder else path / CIFAR10.base_folder
    if not folder.is_dir() and (path / CIFAR10.filename).is_file():
        return _official_blobs(path / CIFAR10.filename, md5s)
    blobs = {}
    for name in names:
        try:
            blobs[name] = (folder / name).read_bytes()
        except OSError as err:
            raise DataError(f"cannot read {folder / name}: {err.strerror}; {STAGE_HINT}") from err
        _check_md5(name, blobs[name], md5s, folder)
    return blobs


def read_official(path: Path, checksums: str = "official") -> Decoded:
    """Read the official python-pickle CIFAR-10 from a folder or ``cifar-10-python.tar.gz``.

    Raises:
        DataError: missing files, checksum mismatch, or content that is not a CIFAR-10 batch.
    """
    blobs = _official_blobs(path, expected_md5s(checksums))
    train = [load_batch(blobs[n], f"{path}:{n}") for n, _ in CIFAR10.train_list]
    test = load_batch(blobs[CIFAR10.test_list[0][0]], f"{path}:{CIFAR10.test_list[0][0]}")
    return Decoded(
        train_images=torch.from_numpy(np.concatenate([x for x, _ in train])),
        train_labels=torch.from_numpy(np.concatenate([y for _, y in train])),
        test_images=torch.from_numpy(np.ascontiguousarray(test[0])),
        test_labels=torch.from_numpy(test[1]),
        classes=tuple(CIFAR10_CLASSES),
    )

