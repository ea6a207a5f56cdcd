"""torchgeo datasets, per-tile samplers and the loaders training/evaluation call."""

import math

import numpy as np
import pytest
import torch

from semimtl_geo.checkpoint import ModelMeta
from semimtl_geo.cli.main import main
from semimtl_geo.data import (
    dataset_info,
    list_isprs_tiles,
    make_isprs_grid_loader,
    make_isprs_train_loader,
    read_isprs_tile,
    read_manifest,
)
from semimtl_geo.data.isprs import GridSpec
from semimtl_geo.data.isprs.dataset import make_isprs_geodataset
from semimtl_geo.data.isprs.loaders import dihedral, isprs_geodataset
from semimtl_geo.data.isprs.samplers import (
    RandomTileCropSampler,
    TileGrid,
    TileGridSampler,
    grid_windows,
)
from semimtl_geo.data.isprs.synthesize import synthesize_isprs
from semimtl_geo.errors import UserError


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("isprs")
    # Potsdam 240 px at 5 cm -> 133 px at 9 cm; tiles abut edge to edge in EPSG:32633.
    synthesize_isprs(root / "src", size_potsdam=240, size_vaihingen=110, tiles_potsdam=4,
                     tiles_vaihingen=4, seed=2, orthos=("IRRG",))
    out = root / "prepared"
    assert main(["prepare-isprs", "--potsdam", str(root / "src/potsdam"), "--vaihingen",
                 str(root / "src/vaihingen"), "-o", str(out), "--no-progress",
                 "--no-preview"]) == 0
    return out


def _window_of(records, w):
    rec = next(r for r in records if r.tile_id == w.tile_id)
    arrays = read_isprs_tile(rec)
    sl = (slice(w.row, w.row + w.height), slice(w.col, w.col + w.width))
    return rec, arrays, sl


def test_list_and_read_tiles(prepared):
    manifest = read_manifest(prepared)
    for ds in ("potsdam", "vaihingen"):
        test = list_isprs_tiles(prepared, ds, "test")
        train = list_isprs_tiles(prepared, ds, "train")
        assert [r.tile_id for r in test] == manifest["datasets"][ds]["split"]["test"]
        assert {r.split for r in train} == {"train"}
        t = read_isprs_tile(test[0])
        assert t.image.dtype == np.uint8 and t.image.shape == (3, test[0].height, test[0].width)
        assert t.mask.dtype == np.uint8 and t.mask.shape == t.image.shape[1:]
        assert t.height.dtype == np.float32 and np.nanmax(t.height) <= 1.0
        assert tuple(t.transform)[:6] == test[0].transform  # float64, exactly the manifest's
        assert t.tile_id == test[0].tile_id and t.crs is not None
    assert read_isprs_tile(list_isprs_tiles(prepared, "potsdam")[0]).crs.to_epsg() == 32633


def test_dataset_info_fills_model_meta(prepared):
    info = dataset_info(prepared, "vaihingen")
    assert info.bands == ("IR", "R", "G") and info.gsd == 0.09 and info.has_height
    meta = info.model_meta()
    assert isinstance(meta, ModelMeta)
    assert meta.height_scale == info.height_scale and meta.classes.names[0] == "impervious_surfaces"
    assert meta.mean == list(info.mean) and len(meta.std) == 3


def test_train_loader_batches_match_the_tiles(prepared):
    kw = dict(crop_size=64, batch_size=3, samples_per_epoch=6, seed=5)
    loader = make_isprs_train_loader(prepared, "potsdam", augment=False, **kw)
    batch = next(iter(loader))
    assert set(batch) == {"image", "mask", "height"}
    assert batch["image"].shape == (3, 3, 64, 64) and batch["image"].dtype == torch.float32
    assert batch["mask"].shape == (3, 64, 64) and batch["mask"].dtype == torch.int64
    assert batch["height"].shape == (3, 64, 64) and batch["height"].dtype == torch.float32
    # The exact pixels of the sampled window, normalised with the manifest's statistics.
    info = dataset_info(prepared, "potsdam")
    sampler = loader.sampler
    # The sampler draws a whole epoch (6 crops) at once from Generator(seed + epoch).
    windows = sampler.sample_windows(6, torch.Generator().manual_seed(5))[:3]
    records = list_isprs_tiles(prepared, "potsdam", "train")
    for i, (w, _) in enumerate(windows):
        _, arrays, sl = _window_of(records, w)
        mean = torch.tensor(info.mean).view(-1, 1, 1)
        std = torch.tensor(info.std).view(-1, 1, 1)
        expect = (torch.from_numpy(arrays.image[:, sl[0], sl[1]]).float() / 255 - mean) / std
        torch.testing.assert_close(batch["image"][i], expect)
        assert torch.equal(batch["mask"][i], torch.from_numpy(arrays.mask[sl].astype(np.int64)))
        torch.testing.assert_close(batch["height"][i], torch.from_numpy(arrays.height[sl]),
                                   equal_nan=True)
    # Same seed, same crops; augmentation is a flip/rot90 of the same crop.
    again = next(iter(make_isprs_train_loader(prepared, "potsdam", augment=False, **kw)))
    assert torch.equal(again["image"], batch["image"])
    aug = next(iter(make_isprs_train_loader(prepared, "potsdam", augment=True, **kw)))
    codes = [c for _, c in RandomTileCropSampler(
        [r.grid() for r in records], 64, 6, seed=5).sample_windows(
            6, torch.Generator().manual_seed(5))][:3]
    for i, c in enumerate(codes):
        assert torch.equal(aug["mask"][i], dihedral(batch["mask"][i], c))
    assert any(c != 0 for c in codes)


def test_train_loader_tasks_select_keys(prepared):
    seg = next(iter(make_isprs_train_loader(prepared, "potsdam", tasks=("seg",), crop_size=32,
                                            batch_size=2, samples_per_epoch=2)))
    assert set(seg) == {"image", "mask"}
    hgt = next(iter(make_isprs_train_loader(prepared, "vaihingen", tasks=("height",),
                                            crop_size=32, batch_size=2, samples_per_epoch=2)))
    assert set(hgt) == {"image", "height"}
    with pytest.raises(UserError, match="smaller crop"):
        make_isprs_train_loader(prepared, "potsdam", crop_size=4096)
    with pytest.raises(UserError, match="Unknown task"):
        make_isprs_train_loader(prepared, "potsdam", tasks=("depth",))


def test_train_loader_with_worker_processes(prepared):
    kw = dict(tasks=("seg",), crop_size=48, batch_size=2, samples_per_epoch=4, seed=1)
    in_process = [b["mask"] for b in make_isprs_train_loader(prepared, "potsdam", **kw)]
    workers = [b["mask"] for b in make_isprs_train_loader(prepared, "potsdam", num_workers=2, **kw)]
    assert len(workers) == 2 and all(torch.equal(a, b) for a, b in zip(in_process, workers))


def test_random_crops_stay_inside_one_tile(prepared):
    records = list_isprs_tiles(prepared, "potsdam", "all")
    tiles = [r.grid() for r in records]
    sampler = RandomTileCropSampler(tiles, crop_size=100, length=300, seed=0)
    seen = set()
    for query in sampler:
        assert query.size == 100
        xs, ys = query.geoslice
        inside = []
        for t in tiles:
            a = t.affine
            x0, y1 = a.c, a.f
            x1, y0 = x0 + t.width * a.a, y1 + t.height * a.e
            if x0 - 1e-9 <= xs.start and xs.stop <= x1 + 1e-9 and y0 - 1e-9 <= ys.start \
                    and ys.stop <= y1 + 1e-9:
                inside.append(t.tile_id)
        assert len(inside) == 1, (xs, ys)
        assert xs.stop - xs.start == pytest.approx(100 * 0.09)
        seen.add(inside[0])
    assert len(seen) == len(tiles)  # every tile gets drawn


def test_grid_sampler_counts_and_edges():
    tile = TileGrid("t", 1300, 700, (0.09, 0.0, 1000.0, 0.0, -0.09, 2000.0))
    spec = GridSpec(512, 0.5)
    wins = grid_windows(tile, spec)
    n_cols = math.ceil((1300 - 512) / 256) + 1
    n_rows = math.ceil((700 - 512) / 256) + 1
    assert len(wins) == n_cols * n_rows == TileGridSampler.expected_count(1300, 700) == 10
    assert max(w.col + w.width for w in wins) == 1300  # last column ends at the tile edge
    assert max(w.row + w.height for w in wins) == 700
    assert all(w.width == 512 and w.height == 512 for w in wins)  # never padded
    assert sorted({w.col for w in wins}) == [0, 256, 512, 768, 788]
    small = grid_windows(TileGrid("s", 300, 200, tile.transform), spec)
    assert [(w.height, w.width) for w in small] == [(200, 300)]
    w = wins[-1]
    xs, ys = w.geoslice()
    assert xs.start == pytest.approx(1000.0 + 788 * 0.09) and ys.stop == pytest.approx(
        2000.0 - 188 * 0.09)


def test_grid_loader_patches_are_exact_windows(prepared):
    loader, windows = make_isprs_grid_loader(prepared, "vaihingen", patch_size=64, batch_size=1)
    records = list_isprs_tiles(prepared, "vaihingen", "test")
    expected = sum(TileGridSampler.expected_count(r.width, r.height, 64) for r in records)
    assert len(windows) == expected
    for batch, w in zip(loader, windows):
        rec, arrays, sl = _window_of(records, w)
        assert 0 <= w.row and w.row + w.height <= rec.height
        assert 0 <= w.col and w.col + w.width <= rec.width
        assert torch.equal(batch["mask"][0], torch.from_numpy(arrays.mask[sl].astype(np.int64)))


def test_geodataset_combines_layers(prepared):
    recs = list_isprs_tiles(prepared, "potsdam", "test")
    ds = make_isprs_geodataset([r.image_path for r in recs], [r.mask_path for r in recs],
                               [r.height_path for r in recs])
    w = grid_windows(recs[0].grid(), GridSpec(48, 0.5))[-1]
    sample = ds[w.geoslice()]
    tile = read_isprs_tile(recs[0])
    raw = torch.from_numpy(tile.image[:, w.row:w.row + 48, w.col:w.col + 48]).float()
    assert torch.equal(sample["image"], raw)  # raw pixel values, exact window
    # Split selection: the test-split dataset holds exactly the test tiles' files.
    geo = isprs_geodataset(prepared, "potsdam", "test", tasks=("seg",))
    files = sorted(geo.datasets[0].files)
    assert files == sorted(str(r.image_path) for r in recs)
    assert sample["image"].shape == (3, 48, 48)
    assert sample["mask"].shape == (48, 48) and sample["height"].shape == (48, 48)
    assert sample["mask"].dtype == torch.int64 and sample["height"].dtype == torch.float32


def test_loader_errors(tmp_path, prepared):
    with pytest.raises(UserError, match="prepare-isprs"):
        read_manifest(tmp_path)
    with pytest.raises(UserError, match="Unknown split"):
        list_isprs_tiles(prepared, "potsdam", "val")
    with pytest.raises(UserError, match="Unknown ISPRS dataset"):
        list_isprs_tiles(prepared, "cityscapes")
