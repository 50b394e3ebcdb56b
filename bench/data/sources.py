"""Reading CIFAR-10 from disk: which layout a path holds, class-per-folder image trees, and download
(the official pickles: :mod:`bench.data.official`).

Every reader returns a :class:`Decoded` data set: uint8 images (N, 3, 32, 32) and int64 labels
(N,), for the train and the test split. Nothing here downloads unless :func:`download` is called.

Sources understood (see :func:`detect_kind`):
  * ``official``: ``cifar-10-batches-py/`` or ``cifar-10-python.tar.gz`` (the files torchvision
    downloads: Python-2 pickles of dicts with b'data' uint8 (10000, 3072) in R,G,B planes and
    b'labels'). Checked against the official MD5s taken from ``torchvision.datasets.CIFAR10``.
  * ``image_folder``: a folder or .tar.gz holding ``train/<class>/*.jpg`` and ``test/<class>/*``
    (torchvision ImageFolder layout; classes sorted by name, which is CIFAR-10's label order).
"""

from __future__ import annotations

import re
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torchvision.datasets import CIFAR10
from torchvision.io import ImageReadMode, decode_image

from bench.measure import progress

STAGE_HINT = ("stage the data set with `cifar-bench data download DIR` (needs internet, on a login node), "
              "or pass --data / BENCH_DATA pointing to cifar-10-batches-py/, cifar-10-python.tar.gz, "
              "or a class-per-folder tree or .tar.gz with train/ and test/")

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_MEMBER_RE = re.compile(r"(?:^|.*/)(train|test)/([^/]+)/([^/]+)$")


class DataError(RuntimeError):
    """The data set is missing, unreadable, corrupt or not in a known layout.

    The message names the path and how to stage the data.
    """


@dataclass(frozen=True)
class Decoded:
    """A decoded data set: ``train_images``/``test_images`` uint8 (N, 3, 32, 32), labels int64 (N,)."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    classes: tuple[str, ...]


def data_kind(data: str) -> str:
    """"synthetic", "official" or "image_folder" (the layout found at ``data``, a ``--data`` value), else
    "unknown" (a result records it beside the config: the same work needs the same layout)."""
    if data == "synthetic":
        return "synthetic"
    try:
        return detect_kind(Path(data).expanduser())
    except DataError:
        return "unknown"


def detect_kind(path: Path) -> str:
    """Return "official" or "image_folder" for an existing path.

    Raises:
        DataError: the path does not exist or is in no known layout.
    """
    if not path.exists():
        raise DataError(f"data path {path} does not exist; {STAGE_HINT}")
    if path.is_dir():
        if (path / CIFAR10.base_folder).is_dir() or path.name == CIFAR10.base_folder:
            return "official"
        if (path / CIFAR10.filename).is_file():
            return "official"
        if (path / "train").is_dir() and (path / "test").is_dir():
            return "image_folder"
        raise DataError(f"data folder {path} holds neither {CIFAR10.base_folder}/ nor train/ and test/; {STAGE_HINT}")
    if path.name.endswith((".tar.gz", ".tgz")):
        try:
            with tarfile.open(path, "r:gz") as tar:
                first = tar.next()
        except (tarfile.TarError, OSError, EOFError) as err:
            raise DataError(f"cannot read archive {path}: {err}; {STAGE_HINT}") from err
        return "official" if first is not None and CIFAR10.base_folder in first.name else "image_folder"
    raise DataError(f"data path {path} is not a folder or .tar.gz archive; {STAGE_HINT}")


def _decode_image(blob: bytes, where: str) -> np.ndarray:
    """JPEG/PNG bytes -> uint8 (3, 32, 32) RGB, with torchvision's libjpeg-turbo/libpng decoder
    (about 2x faster than PIL on 32x32 JPEGs: 80 vs 176 us per image, measured here)."""
    try:
        image = decode_image(torch.frombuffer(bytearray(blob), dtype=torch.uint8), mode=ImageReadMode.RGB)
    except (RuntimeError, ValueError) as err:
        raise DataError(f"cannot decode image {where}: {err}") from err
    if tuple(image.shape) != (3, 32, 32):
        raise DataError(f"image {where} is {image.shape[2]}x{image.shape[1]}, CIFAR-10 images are 32x32")
    return image.numpy()


def _iter_image_files(path: Path):
    """Yield (split, class name, file name, bytes) for every image of a folder or .tar.gz tree."""
    if path.is_dir():
        for file in progress.bar(iterable=sorted(path.glob("*/*/*")), desc="decoding", unit=" files"):
            m = _MEMBER_RE.match(file.relative_to(path).as_posix())
            if m and file.suffix.lower() in IMAGE_SUFFIXES:
                yield m.group(1), m.group(2), m.group(3), file.read_bytes()
        return
    # streamed, no extraction to disk; the bar follows the compressed bytes read (the member count
    # of a .tar.gz is unknown before the end)
    with progress.bar(total=path.stat().st_size, desc="decoding", unit="B", unit_scale=True) as shown, \
            open(path, "rb") as raw, tarfile.open(fileobj=_Counted(raw, shown), mode="r|gz") as tar:
        for member in tar:
            m = _MEMBER_RE.match(member.name)
            if member.isfile() and m and member.name.lower().endswith(IMAGE_SUFFIXES):
                yield m.group(1), m.group(2), m.group(3), tar.extractfile(member).read()


class _Counted:
    """A binary file whose reads advance a progress bar by the bytes read."""

    def __init__(self, raw, shown) -> None:
        self.raw, self.shown = raw, shown

    def read(self, size: int = -1) -> bytes:
        blob = self.raw.read(size)
        self.shown.update(len(blob))
        return blob


def read_image_folder(path: Path) -> Decoded:
    """Decode a class-per-folder tree (folder or .tar.gz) with ``train/`` and ``test/``.

    Classes are the folder names sorted (torchvision ImageFolder's rule); files are ordered by
    class then file name, so the result does not depend on archive order.

    Raises:
        DataError: unreadable archive or image, images not 32x32, or train/test classes differ.
    """
    found: dict[str, list[tuple[str, str, np.ndarray]]] = {"train": [], "test": []}
    try:
        for split, cls, name, blob in _iter_image_files(path):
            found[split].append((cls, name, _decode_image(blob, f"{path}:{split}/{cls}/{name}")))
    except (tarfile.TarError, OSError, EOFError) as err:
        raise DataError(f"cannot read {path}: {err}; {STAGE_HINT}") from err
    classes = tuple(sorted({c for c, _, _ in found["train"]}))
    if not found["train"] or not found["test"]:
        raise DataError(f"{path} holds no images under train/<class>/ and test/<class>/; {STAGE_HINT}")
    if tuple(sorted({c for c, _, _ in found["test"]})) != classes:
        raise DataError(f"{path}: train/ and test/ have different class folders")
    splits = []
    for split in ("train", "test"):
        items = sorted(found[split], key=lambda t: (t[0], t[1]))
        images = torch.from_numpy(np.stack([a for _, _, a in items]))
        labels = torch.tensor([classes.index(c) for c, _, _ in items], dtype=torch.int64)
        splits += [images, labels]
    return Decoded(*splits, classes=classes)


def download(root: Path) -> Path:
    """Download the official CIFAR-10 into ``root`` with torchvision (MD5-verified) and return it.

    Raises:
        DataError: the download or its checksum failed (e.g. no internet on a compute node).
    """
    made = [p for p in (root, *root.parents) if not p.exists()]  # what a failed download must not leave
    try:
        CIFAR10(str(root), train=True, download=True)
    except (OSError, RuntimeError) as err:  # URLError is an OSError
        for folder in made:  # innermost first; only folders it left empty
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise DataError(f"download into {root} failed: {err}. Compute nodes often have no internet: "
                        f"download on a login node, or copy cifar-10-python.tar.gz there by hand") from err
    return root / CIFAR10.base_folder
