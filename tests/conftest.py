"""Shared fixtures: small data sets in the official pickle layout and the class-per-folder layout.

The official files are written the way the CIFAR-10 release has them (pickled dicts with bytes
keys, b'data' uint8 (N, 3072) in R,G,B planes, b'labels' a list of ints), only smaller.
"""

from __future__ import annotations

import atexit
import hashlib
import io
import json
import os
import pickle
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.sif_image import base_archive, sif  # noqa: F401 (session fixtures: one SIF per session for all tests)

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
BATCHES = ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

# The tests run on busy shared machines, where the contention rule (bench.results.taint) would make every
# real run of theirs "tainted", never a figure: they run with the rule off, which each result records as
# contention.rule; tests/test_contention_hog.py turns it on beside a CPU hog.
os.environ.setdefault("BENCH_CONTENTION_RULE", "off")
# The history of runs (bench.history.store) goes to a folder of this test session, never the user's default;
# the runs the tests start in subprocesses inherit it.
os.environ["BENCH_HISTORY"] = tempfile.mkdtemp(prefix="cifar-bench-history-tests-")
atexit.register(shutil.rmtree, os.environ["BENCH_HISTORY"], True)


def batch_bytes(n: int, seed: int) -> bytes:
    """One official-format batch of n images: labels cycle over the 10 classes."""
    rng = np.random.default_rng(seed)
    entry = {b"batch_label": b"test batch", b"labels": [i % 10 for i in range(n)],
             b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
             b"filenames": [f"img{i}.png".encode() for i in range(n)]}
    return pickle.dumps(entry, protocol=2)


@pytest.fixture
def official_dir(tmp_path: Path) -> tuple[Path, Path]:
    """A ``cifar-10-batches-py/`` of 20 images per batch, and a checksum JSON for it."""
    folder = tmp_path / "data" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    md5s = {}
    for i, name in enumerate(BATCHES):
        blob = batch_bytes(20, i)
        (folder / name).write_bytes(blob)
        md5s[name] = hashlib.md5(blob).hexdigest()
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [c.encode() for c in CLASSES]}, protocol=2))
    sums = tmp_path / "md5s.json"
    sums.write_text(json.dumps(md5s))
    return folder.parent, sums


def write_image_tree(root: Path, per_class: tuple[int, int] = (6, 2), fmt: str = "PNG") -> Path:
    """train/<class>/*.png and test/<class>/*.png with 32x32 images whose red channel = label."""
    for split, n in zip(("train", "test"), per_class):
        for label, cls in enumerate(CLASSES):
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = np.full((32, 32, 3), (label * 20, i, 7), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / cls / f"{i:04d}.{fmt.lower()}", fmt)
    return root


def tar_gz(folder: Path, archive: Path, arcname: str = ".") -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=arcname)
    return archive


def run_cli(*args: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run ``python -m bench ARGS`` and return the completed process (text output)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "bench", *args], capture_output=True, text=True,
                          timeout=timeout, env=full_env, cwd=REPO)


def run_result(proc: subprocess.CompletedProcess, out: Path | None = None) -> tuple[Path, dict]:
    """The result of a ``bench run`` that must have succeeded: the path its ``result: PATH`` line
    names (inside ``out`` when given) and the JSON loaded from there.

    Fails the test, showing the output's tail, when the run failed or printed no result line.
    """
    from bench.results.resultfile import load_result

    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    lines = [line.split("result: ", 1)[1] for line in proc.stdout.splitlines() if line.startswith("result: ")]
    assert lines, "no 'result: PATH' line in the output:\n" + proc.stdout[-2000:]
    path = Path(lines[-1])
    if out is not None:
        assert path.parent == out, (path, out)
    return path, load_result(path)


@pytest.fixture(autouse=True)
def no_inherited_run_id(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test starts with, or leaves behind, a $BENCH_RUN_ID: an in-process run exports its id
    (bench.results.resultfile.export_run_id), and every later child process (an sbatch job too) would inherit it."""
    monkeypatch.setenv("BENCH_RUN_ID", "")  # recorded, so the teardown restores "unset" whatever the test did
    monkeypatch.delenv("BENCH_RUN_ID")


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private decoded-data cache folder (also exported as BENCH_CACHE for child processes)."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("BENCH_CACHE", str(folder))
    return folder


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The real CIFAR-10 JPEG archive from ../shared/data (skips the test when absent)."""
    if not SHARED_DATA.is_file():
        pytest.skip(f"real CIFAR-10 archive not found at {SHARED_DATA}")
    return SHARED_DATA


def pickle_that_runs_code(marker: Path) -> bytes:
    """A pickle whose loading would create ``marker`` through os.system (must never run)."""

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    return pickle.dumps({b"data": Evil(), b"labels": [0]}, protocol=2)


def tar_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, blob in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return buf.getvalue()
