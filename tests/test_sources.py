"""Reading the official pickles and class-per-folder trees; checksums; hostile or broken files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.data import official, sources
from bench.data.official import read_official
from bench.data.sources import DataError, detect_kind, read_image_folder
from tests.conftest import BATCHES, CLASSES, batch_bytes, pickle_that_runs_code, tar_bytes, tar_gz, write_image_tree


def test_official_folder_reads_planes_as_chw(official_dir):
    root, sums = official_dir
    decoded = read_official(root, str(sums))
    assert decoded.train_images.shape == (100, 3, 32, 32) and decoded.train_images.dtype == torch.uint8
    assert decoded.test_images.shape == (20, 3, 32, 32)
    assert decoded.train_labels.tolist()[:12] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    first = __import__("pickle").loads(batch_bytes(20, 0))[b"data"][0]
    # R plane = first 1024 values, row-major 32x32
    assert decoded.train_images[0, 0].flatten().tolist() == first[:1024].tolist()
    assert decoded.train_images[0, 2].flatten().tolist() == first[2048:].tolist()


def test_official_md5s_come_from_torchvision():
    md5s = official.official_md5s()
    assert md5s["data_batch_1"] == "c99cafc152244af753f735de768cd75f"
    assert md5s["cifar-10-python.tar.gz"] == "c58f30108f718f92721af3b95e74349a"
    assert set(BATCHES) <= set(md5s)


def test_official_checksums_reject_other_files(official_dir):
    root, _ = official_dir
    with pytest.raises(DataError, match="checksum mismatch for data_batch_1.*cifar-bench data download"):
        read_official(root, "official")


def test_checksums_can_be_skipped_on_purpose(official_dir):
    root, _ = official_dir
    assert read_official(root, "skip").train_images.shape[0] == 100


def test_official_tar_gz_is_read_without_extracting(official_dir, tmp_path):
    root, sums = official_dir
    archive = tar_gz(root / "cifar-10-batches-py", tmp_path / "cifar-10-python.tar.gz", "cifar-10-batches-py")
    assert detect_kind(archive) == "official"
    decoded = read_official(archive, str(sums))  # members checked one by one (archive md5 not listed)
    assert decoded.train_images.shape == (100, 3, 32, 32)


def test_truncated_batch_is_a_clear_error(official_dir):
    root, _ = official_dir
    batch = root / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:500])
    with pytest.raises(DataError, match=r"data_batch_3 is not a readable CIFAR-10 batch"):
        read_official(root, "skip")


def test_pickle_that_runs_code_is_refused_and_runs_nothing(official_dir, tmp_path):
    root, _ = official_dir
    marker = tmp_path / "pwned"
    (root / "cifar-10-batches-py" / "data_batch_2").write_bytes(pickle_that_runs_code(marker))
    with pytest.raises(DataError, match="posix.system|os.system|not allowed"):
        read_official(root, "skip")
    assert not marker.exists()


def test_non_uint8_array_is_refused(official_dir):
    import pickle

    root, _ = official_dir
    bad = {b"data": np.zeros((2, 3072), dtype=np.float64), b"labels": [0, 1]}
    (root / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps(bad, protocol=2))
    with pytest.raises(DataError, match="not allowed|uint8"):
        read_official(root, "skip")


def test_missing_path_names_it_and_the_staging_command(tmp_path):
    with pytest.raises(DataError) as err:
        detect_kind(tmp_path / "nope")
    assert str(tmp_path / "nope") in str(err.value) and "cifar-bench data download" in str(err.value)


def test_unknown_folder_layout_is_an_error(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(DataError, match="neither"):
        detect_kind(tmp_path / "x")


def test_checksum_file_must_be_a_mapping(official_dir, tmp_path):
    root, _ = official_dir
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(["x"]))
    with pytest.raises(DataError, match="JSON object"):
        read_official(root, str(bad))


@pytest.mark.parametrize("packed", [False, True])
def test_image_folder_tree_and_archive(tmp_path, packed):
    tree = write_image_tree(tmp_path / "tree")
    path = tar_gz(tree, tmp_path / "tree.tar.gz", "cifar10") if packed else tree
    assert detect_kind(path) == "image_folder"
    decoded = read_image_folder(path)
    assert decoded.classes == CLASSES
    assert decoded.train_images.shape == (60, 3, 32, 32) and decoded.test_images.shape == (20, 3, 32, 32)
    # the red channel encodes the label: the class order is CIFAR-10's label order
    assert torch.equal(decoded.train_images[:, 0, 0, 0].long() // 20, decoded.train_labels)
    assert decoded.train_labels.bincount().tolist() == [6] * 10


def test_image_of_wrong_size_is_refused(tmp_path):
    from PIL import Image

    tree = write_image_tree(tmp_path / "tree", per_class=(1, 1))
    Image.new("RGB", (64, 64)).save(tree / "train" / "cat" / "big.png")
    with pytest.raises(DataError, match="64x64.*32x32"):
        read_image_folder(tree)


def test_corrupt_archive_is_a_clear_error(tmp_path):
    archive = tmp_path / "broken.tar.gz"
    archive.write_bytes(tar_bytes({"train/cat/0.png": b"x" * 100})[:60])
    with pytest.raises(DataError, match=str(archive)):
        read_image_folder(archive) if detect_kind(archive) else None


def test_download_failure_says_what_to_do(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(sources, "CIFAR10", type("Fake", (), {"__init__": offline, "base_folder": "x"}))
    with pytest.raises(DataError, match="login node"):
        sources.download(tmp_path)


def test_reading_real_archive_header(real_data: Path):
    assert detect_kind(real_data) == "image_folder"


def test_a_failed_download_leaves_no_empty_folder(tmp_path, monkeypatch):
    from bench.data import sources

    def offline(*args, **kwargs):
        raise OSError("<urlopen error [Errno -2] Name or service not known>")  # what an offline node sees

    monkeypatch.setattr(sources, "CIFAR10", offline)
    with pytest.raises(sources.DataError, match="download on a login node"):
        sources.download(tmp_path / "new" / "cifar")
    assert list(tmp_path.iterdir()) == []  # neither folder it made is left
