"""The data paths: batched crop/flip on literal tensors, the PIL path's items, the device path's
index batches, and one short end-to-end run per path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bench.core.config import make_config
from bench.data import datamodule, datapaths
from bench.data.datapaths import DeviceTrainSet, IndexBatch, PilImages, augment_seed, random_crop_flip
from bench.data.sampling import GlobalBatchSampler
from bench.results.resultfile import load_result
from bench.run import threads
from tests.conftest import run_cli

NORM = (datamodule.CIFAR10_MEAN, datamodule.CIFAR10_STD)  # the normalisation every data path uses

# One 2-channel 3x3 image (non-zero values, so padding is recognisable) and its 1-pixel zero padding.
IMAGE = torch.tensor([[[1, 2, 3], [4, 5, 6], [7, 8, 9]],
                      [[11, 12, 13], [14, 15, 16], [17, 18, 19]]], dtype=torch.uint8)
PADDED = torch.tensor([[[0, 0, 0, 0, 0], [0, 1, 2, 3, 0], [0, 4, 5, 6, 0], [0, 7, 8, 9, 0], [0, 0, 0, 0, 0]],
                       [[0, 0, 0, 0, 0], [0, 11, 12, 13, 0], [0, 14, 15, 16, 0], [0, 17, 18, 19, 0],
                        [0, 0, 0, 0, 0]]], dtype=torch.uint8)


def _which_window(out: torch.Tensor) -> tuple[int, int, bool]:
    """(top, left, flipped) of the one window of PADDED (all channels alike) equal to ``out``."""
    found = [(t, l, f) for t in range(3) for l in range(3) for f in (False, True)
             if torch.equal(out, (lambda w: w.flip(-1) if f else w)(PADDED[:, t:t + 3, l:l + 3]))]
    assert len(found) == 1, f"{out} is no window of the padded image"
    return found[0]


def test_crop_is_a_window_of_the_padded_image_with_per_image_offsets():
    images = IMAGE.expand(400, 2, 3, 3).contiguous()
    out = random_crop_flip(images, 1, torch.Generator().manual_seed(0))
    assert out.dtype == torch.uint8 and out.shape == (400, 2, 3, 3)
    windows = {_which_window(o) for o in out}
    assert len(windows) == 18  # every offset (3 x 3) with and without flip: drawn per image
    assert torch.equal(images, IMAGE.expand(400, 2, 3, 3))  # the input is left alone


def test_no_padding_only_flips_about_half():
    images = torch.tensor([[[[1, 2], [3, 4]]]], dtype=torch.uint8).expand(1000, 1, 2, 2)
    out = random_crop_flip(images, 0, torch.Generator().manual_seed(1))
    flipped = (out == torch.tensor([[[2, 1], [4, 3]]], dtype=torch.uint8)).flatten(1).all(1)
    kept = (out == images[0]).flatten(1).all(1)
    assert bool((flipped | kept).all())
    assert 400 < int(flipped.sum()) < 600


def test_same_seed_same_crops_other_seed_other_crops():
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    a = random_crop_flip(images, 4, torch.Generator().manual_seed(5))
    b = random_crop_flip(images, 4, torch.Generator().manual_seed(5))
    c = random_crop_flip(images, 4, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == images.shape and a.dtype == torch.uint8


def test_augment_seed_differs_by_epoch_and_seed_and_repeats():
    assert augment_seed(0, 0) == augment_seed(0, 0)
    assert len({augment_seed(0, 0), augment_seed(0, 1), augment_seed(1, 0)}) == 3


def test_device_train_set_gathers_the_indexed_images_and_labels():
    images = torch.stack([IMAGE + 20 * i for i in range(5)])
    labels = torch.arange(5) * 2
    train = DeviceTrainSet(images, labels)
    out, got = train.batch(torch.tensor([3, 0, 3]), seed=augment_seed(0, 0))
    assert got.tolist() == [6, 0, 6] and out.shape == (3, 2, 3, 3)
    assert set(out[0].unique().tolist()) <= set((IMAGE + 60).unique().tolist()) | {0}
    assert torch.equal(out[0], out[2])  # one draw per image and epoch
    again, _ = DeviceTrainSet(images, labels).batch(torch.tensor([3, 0, 3]), seed=augment_seed(0, 0))
    assert torch.equal(out, again)


def test_device_path_augments_the_same_global_batch_on_any_world_size():
    """What an image looks like in an epoch does not depend on the rank or batch it lands in, so the
    shards of DDP ranks put together are the one-device batch, crops and flips included."""
    images = torch.randint(0, 256, (96, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    labels = torch.arange(96) % 10
    for epoch in (0, 1):
        seed = augment_seed(7, epoch)
        one = [DeviceTrainSet(images, labels).batch(torch.tensor(b), seed)[0]
               for b in GlobalBatchSampler(96, 32, 0, 1, seed=7)]
        ranks = [DeviceTrainSet(images, labels) for _ in range(3)]
        shards = [[ranks[r].batch(torch.tensor(b), seed)[0] for b in GlobalBatchSampler(96, 32, r, 3, seed=7)]
                  for r in range(3)]
        for step, whole in enumerate(one):
            assert torch.equal(torch.cat([shards[r][step] for r in range(3)]), whole)
    first = DeviceTrainSet(images, labels).batch(torch.arange(96), augment_seed(7, 0))[0]
    second = DeviceTrainSet(images, labels).batch(torch.arange(96), augment_seed(7, 1))[0]
    assert not torch.equal(first, second)  # a new epoch draws new crops


def test_index_loader_yields_the_samplers_index_lists():
    sampler = GlobalBatchSampler(10, 4, 0, 1, seed=3)
    batches = list(datapaths.index_loader(10, sampler))
    assert all(isinstance(b, IndexBatch) and b.indices.dtype == torch.int64 for b in batches)
    assert [b.indices.tolist() for b in batches] == list(sampler)


def _crop_counts(crops) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Histograms of the top and left offsets (9 bins each) and the number of flips of 32x32
    crops of WHERE padded by 4 with zeros; any other image fails the test."""
    padded = torch.nn.functional.pad(WHERE, (datapaths.PADDING,) * 4)
    windows = {}
    for top in range(9):
        for left in range(9):
            window = padded[:, top:top + 32, left:left + 32]
            windows[window.numpy().tobytes()] = (top, left, 0)
            windows[window.flip(-1).numpy().tobytes()] = (top, left, 1)
    found = [windows.get(torch.as_tensor(c).numpy().tobytes()) for c in crops]
    assert None not in found, "an augmented image is no zero-padded 32x32 crop (or its mirror) of the image"
    drawn = torch.tensor(found)
    return torch.bincount(drawn[:, 0], minlength=9), torch.bincount(drawn[:, 1], minlength=9), int(drawn[:, 2].sum())


# A 32x32 image whose pixels say where they are (channel 0: row, 1: column, 2: a constant 200).
WHERE = torch.stack([torch.arange(1, 33)[:, None].expand(32, 32), torch.arange(1, 33)[None, :].expand(32, 32),
                     torch.full((32, 32), 200)]).to(torch.uint8)


def test_all_three_paths_draw_the_same_crops_and_flips():
    """The device path's batched crop and flip against the uint8 path's v2 transforms and the pil
    path's PIL transforms: zero padding of 4, offsets uniform over 0..8 in each direction,
    flips with p = 0.5. 1,800 draws per path: each offset bin expects 200 (sd 13), flips 900 (sd 21)."""
    n = 1800
    torch.manual_seed(0)  # the uint8 and pil transforms draw from torch's global generator
    drawn = {"device": random_crop_flip(WHERE.expand(n, 3, 32, 32).contiguous(), datapaths.PADDING,
                                        torch.Generator().manual_seed(0)),
             "uint8": [datamodule.train_transform()(WHERE) for _ in range(n)]}
    crop_flip = datapaths.pil_train_transform(*NORM).transforms[:2]  # before ToTensor
    image = Image.fromarray(WHERE.permute(1, 2, 0).numpy())
    drawn["pil"] = [torch.from_numpy(np.array(crop_flip[1](crop_flip[0](image)))).permute(2, 0, 1) for _ in range(n)]
    for path, crops in drawn.items():
        tops, lefts, flips = _crop_counts(crops)
        assert bool(((tops > 130) & (tops < 270)).all()) and bool(((lefts > 130) & (lefts < 270)).all()), \
            (path, tops, lefts)
        assert 780 < flips < 1020, (path, flips)


def test_pil_item_is_normalised_float32():
    white = torch.full((1, 3, 32, 32), 255, dtype=torch.uint8)
    image, label = PilImages(white, torch.tensor([7]),
                             datapaths.pil_test_transform(*NORM))[0]
    assert image.dtype == torch.float32 and image.shape == (3, 32, 32) and int(label) == 7
    expected = (1 - torch.tensor(datamodule.CIFAR10_MEAN)) / torch.tensor(datamodule.CIFAR10_STD)
    assert torch.allclose(image[:, 5, 5], expected)


def test_pil_test_items_match_the_uint8_paths_normalisation():
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(4))
    pil = PilImages(images, torch.tensor([0, 1]), datapaths.pil_test_transform(*NORM))
    assert torch.allclose(pil[1][0], datamodule.normalize(images)[1], atol=1e-6)  # same layout (CHW), same values
    train = PilImages(images, torch.tensor([0, 1]), datapaths.pil_train_transform(*NORM))
    item = train[0][0]
    assert item.dtype == torch.float32 and item.shape == (3, 32, 32) and not torch.allclose(item, pil[0][0])


def test_datamodule_builds_each_paths_sets():
    kinds = {}
    for path in ("pil", "uint8", "device"):
        dm = datamodule.CifarDataModule(make_config("smoke", data="synthetic", train_samples=100, test_samples=20,
                                              data_path=path, num_workers=0))
        dm.setup()
        kinds[path] = (type(dm.train_set).__name__, type(next(iter(dm.train_dataloader()))).__name__)
    assert kinds == {"pil": ("PilImages", "list"), "uint8": ("AugmentedImages", "list"),
                     "device": ("DeviceTrainSet", "IndexBatch")}


def test_device_path_auto_workers_is_zero():
    assert threads.loader_workers(make_config("smoke", data="synthetic", data_path="device")) == 0
    assert threads.loader_workers(make_config("smoke", data="synthetic", data_path="device", num_workers=0)) == 0


@pytest.mark.parametrize("path", ["pil", "uint8", "device"])
def test_each_data_path_runs_end_to_end(path, tmp_path: Path):
    out = tmp_path / "runs"
    proc = run_cli("run", "--data", "synthetic", "--preset", "smoke", "--train-samples", "512",
                   "--test-samples", "100", "--data-path", path, "--out", str(out))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    (result_file,) = out.glob("*.json")
    r = load_result(result_file)
    assert r["status"] == "ok" and r["config"]["data_path"] == path
    assert r["metrics"]["optimizer_steps"] == 512 // 64 and r["metrics"]["train_images_per_epoch"] == 512
    assert r["metrics"]["test_total"] == 100
    if path == "device":
        assert r["world"]["loader_workers_per_rank"] == 0
