"""Random scaling (0.5-2.0) and flips "following [65]" (PSPNet), as the paper trains."""

from pathlib import Path

import numpy as np
import pytest
import torch

from semimtl_geo.cli.main import main
from semimtl_geo.data import list_isprs_tiles, make_isprs_train_loader, read_isprs_tile
from semimtl_geo.data.cityscapes.dataset import Cityscapes
from semimtl_geo.data.cityscapes.fixtures import write_cityscapes_fixture
from semimtl_geo.data.isprs.loaders import rescale_crop
from semimtl_geo.data.isprs.samplers import RandomTileCropSampler
from semimtl_geo.data.isprs.synthesize import synthesize_isprs


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("isprs_aug")
    synthesize_isprs(root / "src", size_potsdam=240, size_vaihingen=110, tiles_potsdam=4,
                     tiles_vaihingen=4, seed=3, orthos=("IRRG",))
    out = root / "prepared"
    assert main(["prepare-isprs", "--potsdam", str(root / "src/potsdam"), "--vaihingen",
                 str(root / "src/vaihingen"), "-o", str(out), "--no-progress",
                 "--no-preview"]) == 0
    return out


def test_scaled_crops_read_crop_over_scale_pixels_and_resize(prepared):
    records = list_isprs_tiles(prepared, "potsdam", "train")
    sampler = RandomTileCropSampler([r.grid() for r in records], 48, 64, seed=1,
                                    augment=False, scale_range=(0.5, 2.0))
    windows = sampler.sample_windows(64, torch.Generator().manual_seed(1))
    sides = [w.height for w, _ in windows]
    assert all(w.height == w.width for w, _ in windows)
    assert min(sides) >= 24 and max(sides) <= 96  # 48 / 2 .. 48 / 0.5
    assert len(set(sides)) > 10 and min(sides) < 36 and max(sides) > 72  # really drawn
    # what the loader returns is the window's pixels resized to the crop size
    loader = make_isprs_train_loader(prepared, "potsdam", crop_size=48, batch_size=4,
                                     samples_per_epoch=4, seed=1, augment=False,
                                     scale_range=(0.5, 2.0), mean=[0, 0, 0], std=[1, 1, 1])
    batch = next(iter(loader))
    assert batch["image"].shape == (4, 3, 48, 48) and batch["mask"].shape == (4, 48, 48)
    drawn = loader.sampler.sample_windows(4, torch.Generator().manual_seed(1))
    for i, (w, _) in enumerate(drawn):
        rec = next(r for r in records if r.tile_id == w.tile_id)
        tile = read_isprs_tile(rec)
        sl = (slice(w.row, w.row + w.height), slice(w.col, w.col + w.width))
        image = torch.from_numpy(tile.image[:, sl[0], sl[1]]).float()
        mask = torch.from_numpy(tile.mask[sl].astype(np.int64))
        height = torch.from_numpy(tile.height[sl])
        img, m, h = rescale_crop(image, mask, height, 48)
        torch.testing.assert_close(batch["image"][i], img / 255.0)
        assert torch.equal(batch["mask"][i], m)
        assert set(m.unique().tolist()) <= set(mask.unique().tolist())  # no invented class
        torch.testing.assert_close(batch["height"][i], h, equal_nan=True)


def test_rescale_crop_is_nearest_for_labels_and_heights():
    mask = torch.tensor([[0, 1], [2, 255]])
    height = torch.tensor([[0.0, float("nan")], [1.5, 2.0]])
    image = torch.arange(12, dtype=torch.float32).view(3, 2, 2)
    img, m, h = rescale_crop(image, mask, height, 4)
    assert torch.equal(m, torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 255, 255],
                                        [2, 2, 255, 255]]))
    assert torch.isnan(h[:2, 2:]).all() and torch.equal(h[2:, :2], torch.full((2, 2), 1.5))
    assert img.shape == (3, 4, 4)
    small_img, small_m, _ = rescale_crop(img, m, h, 2)  # shrinking: antialiased image
    assert small_img.shape == (3, 2, 2) and small_m.shape == (2, 2)


def test_streetview_crops_are_scaled(tmp_path: Path):
    root = tmp_path / "cityscapes"
    write_cityscapes_fixture(root)
    plain = Cityscapes(root, "train", size=(64, 128), crop_size=(24, 40))
    scaled = Cityscapes(root, "train", size=(64, 128), crop_size=(24, 40),
                        scale_range=(0.5, 2.0))
    frame = scaled._resized(0, ("seg", "height"))
    differs = 0
    for seed in range(6):
        s = scaled.sample(0, np.random.default_rng(seed))
        p = plain.sample(0, np.random.default_rng(seed))
        assert s["image"].shape == (3, 24, 40) and s["mask"].shape == (24, 40)
        assert set(s["mask"].unique().tolist()) <= set(np.unique(frame.mask).tolist())
        differs += not torch.equal(s["mask"], p["mask"])
    assert differs >= 4  # the scale changes what a crop covers
