"""Cityscapes, Cityscapes-depth and Synscapes datasets on fixtures with the real layouts."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from semimtl_geo.classes import CITYSCAPES_CLASSES, IGNORE_INDEX
from semimtl_geo.data.cityscapes.dataset import Cityscapes, CityscapesDepth, disparity_to_depth
from semimtl_geo.data.cityscapes.facts import LABEL_ID_TO_TRAIN_ID, label_ids_to_train_ids
from semimtl_geo.data.cityscapes.fixtures import FIXTURE_CITIES, write_cityscapes_fixture
from semimtl_geo.data.streetview.base import depth_to_target, height_to_metres, nearest_resize
from semimtl_geo.data.streetview.fixtures import write_streetview_fixtures
from semimtl_geo.data.synscapes.dataset import Synscapes
from semimtl_geo.data.synscapes.facts import PAPER_SPLIT, split_ids, split_sizes
from semimtl_geo.data.synscapes.fixtures import write_synscapes_fixture
from semimtl_geo.errors import UserError

SIZE = (32, 64)


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_streetview_fixtures(tmp_path_factory.mktemp("sv"), size=SIZE)


def test_label_ids_map_to_the_19_train_ids() -> None:
    ids = np.arange(-1, 40).reshape(1, -1)
    train = label_ids_to_train_ids(ids)
    # cityscapesScripts' table, written out by hand: id -> trainId
    expected = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
                24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
    for label_id, value in zip(ids.ravel(), train.ravel()):
        assert value == expected.get(int(label_id), IGNORE_INDEX), label_id
    assert train.dtype == np.int64
    assert sorted(LABEL_ID_TO_TRAIN_ID.values()) == list(range(len(CITYSCAPES_CLASSES)))
    assert CITYSCAPES_CLASSES.names[LABEL_ID_TO_TRAIN_ID[23]] == "sky"
    assert CITYSCAPES_CLASSES.names[LABEL_ID_TO_TRAIN_ID[26]] == "car"


def test_cityscapes_labels_read_from_png(roots: dict[str, Path]) -> None:
    ds = Cityscapes(roots["cityscapes"], "val", tasks=("seg",), size=None)
    label_png = roots["cityscapes"] / "gtFine" / "val" / "frankfurt" / (
        f"{ds.ids[0]}_gtFine_labelIds.png"
    )
    raw = np.asarray(Image.open(label_png))
    sample = ds[0]
    assert set(sample) == {"image", "mask"}
    mask = sample["mask"].numpy()
    assert mask.dtype == np.int64 and mask.shape == raw.shape
    assert (mask[raw == 7] == 0).all() and (mask[raw == 23] == 10).all()
    assert (mask[raw == 26] == 13).all()
    assert (raw == 1).any() and (mask[raw == 1] == 255).all()  # ego vehicle is ignored
    assert (mask[raw == 9] == 255).all()  # parking has no train id


def test_disparity_to_depth_hand_worked() -> None:
    # p = 25601 -> d = (25601 - 1) / 256 = 100 px; baseline 0.2 m, fx 2000 px
    # depth = 0.2 * 2000 / 100 = 4.0 m. p = 0 is invalid, p = 1 is zero disparity.
    raw = np.array([[25601, 0, 1, 513]], dtype=np.uint16)
    depth = disparity_to_depth(raw, baseline=0.2, fx=2000.0)
    assert depth[0, 0] == pytest.approx(4.0)
    assert np.isnan(depth[0, 1]) and np.isnan(depth[0, 2])
    assert depth[0, 3] == pytest.approx(0.2 * 2000.0 / 2.0)  # p = 513 -> d = 2 px -> 200 m


def test_cityscapes_depth_from_files(tmp_path: Path) -> None:
    root = write_cityscapes_fixture(tmp_path / "cs", size=(16, 32), frames_per_city=1)
    city = FIXTURE_CITIES["val"][0]
    stem = f"{city}_000000_000019"
    disp = np.zeros((16, 32), dtype=np.uint16)
    disp[:, 1:] = 25601  # 100 px of disparity; column 0 invalid
    Image.fromarray(disp).save(root / "disparity" / "val" / city / f"{stem}_disparity.png")
    cam = {"extrinsic": {"baseline": 0.2}, "intrinsic": {"fx": 2000.0, "fy": 2000.0}}
    (root / "camera" / "val" / city / f"{stem}_camera.json").write_text(json.dumps(cam))
    ds = Cityscapes(root, "val", tasks=("height",), size=None, depth_scale=2.0)
    height = ds[0]["height"].numpy()
    assert height.shape == (16, 32) and height.dtype == np.float32
    assert np.isnan(height[:, 0]).all()
    np.testing.assert_allclose(height[:, 1:], 4.0 / 2.0)  # 4 m at 2 m per unit
    _, _, metres, frame_id = ds.eval_item(0)
    assert frame_id == stem
    np.testing.assert_allclose(metres.numpy()[:, 1:], 4.0)  # evaluation references in metres
    inv = Cityscapes(root, "val", tasks=("height",), size=None, depth_target="inverse_depth",
                     depth_scale=2.0)
    np.testing.assert_allclose(inv[0]["height"].numpy()[:, 1:], 2.0 / 4.0)


def test_inverse_depth_sets_sky_to_zero(roots: dict[str, Path]) -> None:
    ds = Synscapes(roots["synscapes"], "train", tasks=("height",), size=None,
                   depth_target="inverse_depth", depth_scale=10.0)
    height = ds[0]["height"].numpy()
    label_ids = np.asarray(Image.open(roots["synscapes"] / "img" / "class" / "1.png"))
    depth = np.load(roots["synscapes"] / "img" / "depth" / "1.npy")
    sky = label_ids == 23
    assert sky.any() and (~sky).any()
    assert (height[sky] == 0).all()
    np.testing.assert_allclose(height[~sky], 10.0 / depth[~sky], rtol=1e-6)
    # the linear depth target leaves the sky unknown, and evaluation excludes it
    lin = Synscapes(roots["synscapes"], "train", tasks=("height",), size=None)[0]["height"]
    assert torch.isnan(lin[torch.from_numpy(sky)]).all()
    np.testing.assert_allclose(lin.numpy()[~sky], depth[~sky] / 10.0, rtol=1e-6)
    _, _, metres, _ = ds.eval_item(0)
    assert torch.isnan(metres[torch.from_numpy(sky)]).all()


def test_depth_target_round_trip() -> None:
    depth = np.array([2.0, 5.0, np.inf, np.nan, 0.0])
    inv = depth_to_target(depth, "inverse_depth", 10.0)
    np.testing.assert_allclose(inv[:3], [5.0, 2.0, 0.0])
    assert np.isnan(inv[3:]).all()
    np.testing.assert_allclose(height_to_metres(inv[:2], "inverse_depth", 10.0), [2.0, 5.0])
    assert np.isinf(height_to_metres(np.array([0.0]), "inverse_depth", 10.0)).all()
    lin = depth_to_target(depth, "depth", 10.0)
    np.testing.assert_allclose(height_to_metres(lin[:2], "depth", 10.0), [2.0, 5.0])
    assert np.isnan(lin[2:]).all()
    with pytest.raises(UserError, match="depth target"):
        depth_to_target(depth, "disparity", 1.0)  # type: ignore[arg-type]


def test_synscapes_split_sizes_and_order(tmp_path: Path, roots: dict[str, Path]) -> None:
    assert split_sizes(25000) == PAPER_SPLIT == {"train": 20000, "val": 1000, "test": 4000}
    ids = [str(i) for i in range(1, 25001)]
    assert split_ids(ids, "val")[0] == "20001" and split_ids(ids, "val")[-1] == "21000"
    assert split_ids(ids, "test")[0] == "21001" and split_ids(ids, "test")[-1] == "25000"
    assert split_sizes(25) == {"train": 20, "val": 1, "test": 4}
    assert split_sizes(10) == {"train": 8, "val": 1, "test": 1}
    sizes = {s: Synscapes(roots["synscapes"], s, size=SIZE).ids for s in ("train", "val", "test")}
    assert sizes["train"] == [str(i) for i in range(1, 21)]  # numeric order: 9 before 10
    assert sizes["val"] == ["21"] and sizes["test"] == ["22", "23", "24", "25"]
    sample = Synscapes(roots["synscapes"], "val", size=SIZE)[0]
    assert sample["image"].shape == (3, *SIZE) and sample["mask"].shape == SIZE
    small = write_synscapes_fixture(tmp_path / "syn5", size=(16, 32), frames=5)
    with pytest.raises(UserError, match="split 'test' is empty"):
        Synscapes(small, "test")


def test_resize_crop_flip(roots: dict[str, Path]) -> None:
    ds = Cityscapes(roots["cityscapes"], "train", size=(64, 128), crop_size=(24, 40), flip=True)
    native = Cityscapes(roots["cityscapes"], "train", size=None)
    assert len(ds) == 2 * len(FIXTURE_CITIES["train"])
    a = ds.sample(1, np.random.default_rng(7))
    b = ds.sample(1, np.random.default_rng(7))
    assert a["image"].shape == (3, 24, 40) and a["mask"].shape == (24, 40)
    assert a["height"].shape == (24, 40) and a["height"].dtype == torch.float32
    for key in a:
        assert torch.equal(a[key].nan_to_num(-1), b[key].nan_to_num(-1))
    # nearest resizing never invents label values or blends depths
    full = ds._resized(1, ("seg", "height"))
    ref = native._resized(1, ("seg", "height"))
    assert set(np.unique(full.mask)) <= set(np.unique(ref.mask))
    assert set(np.unique(full.depth[np.isfinite(full.depth)])) <= set(
        np.unique(ref.depth[np.isfinite(ref.depth)])
    )
    # resizing raw maps before converting them equals converting at full size, then resizing
    np.testing.assert_array_equal(full.depth, nearest_resize(ref.depth, (64, 128)))
    np.testing.assert_array_equal(full.mask, nearest_resize(ref.mask, (64, 128)))
    np.testing.assert_array_equal(nearest_resize(np.arange(4).reshape(2, 2), (4, 4))[::2, ::2],
                                  np.arange(4).reshape(2, 2))
    flipping = Cityscapes(roots["cityscapes"], "train", size=SIZE, flip=True)
    plain = Cityscapes(roots["cityscapes"], "train", size=SIZE)[0]
    seen = set()
    for seed in range(8):
        s = flipping.sample(0, np.random.default_rng(seed))
        flipped = torch.equal(s["mask"], plain["mask"].flip(-1))
        assert flipped or torch.equal(s["mask"], plain["mask"])
        if flipped:  # image, mask and height are mirrored together
            assert torch.equal(s["image"], plain["image"].flip(-1))
            assert torch.equal(s["height"].nan_to_num(-1), plain["height"].flip(-1).nan_to_num(-1))
        seen.add(flipped)
    assert seen == {True, False}
    img = ds[0]["image"]
    assert img.dtype == torch.float32 and abs(float(img.mean())) < 3  # normalised
    with pytest.raises(UserError, match="Crop size"):
        Cityscapes(roots["cityscapes"], "train", size=(16, 32), crop_size=64)[0]


def test_cityscapes_depth_is_train_extra_height_only(roots: dict[str, Path]) -> None:
    ds = CityscapesDepth(roots["cityscapes"], size=SIZE)
    assert ds.split == "train_extra" and len(ds) == 2 * len(FIXTURE_CITIES["train_extra"])
    assert set(ds[0]) == {"image", "height"}
    assert set(Cityscapes(roots["cityscapes"], "train_extra", tasks=(), size=SIZE)[0]) == {"image"}
    assert ds.ids[0].startswith(FIXTURE_CITIES["train_extra"][0])
    with pytest.raises(UserError, match="no fine labels"):
        Cityscapes(roots["cityscapes"], "train_extra", tasks=("seg",))


def test_missing_folders_are_named(tmp_path: Path, roots: dict[str, Path]) -> None:
    cs = tmp_path / "cs"
    shutil.copytree(roots["cityscapes"], cs)
    shutil.rmtree(cs / "disparity" / "val")
    Cityscapes(cs, "val", tasks=("seg",))  # seg alone does not need disparity
    with pytest.raises(UserError, match=r"disparity folder .*disparity/val is missing.*unzip"):
        Cityscapes(cs, "val", tasks=("seg", "height"))
    shutil.rmtree(cs / "gtFine")
    with pytest.raises(UserError, match=r"gtFine folder .*gtFine/train is missing"):
        Cityscapes(cs, "train", tasks=("seg",))
    with pytest.raises(UserError, match="does not exist"):
        Cityscapes(tmp_path / "nowhere")
    syn = tmp_path / "syn"
    shutil.copytree(roots["synscapes"], syn)
    Synscapes(syn, "train", tasks=("seg",))
    shutil.rmtree(syn / "img" / "depth")
    with pytest.raises(UserError, match=r"img/depth folder .*img/depth is missing"):
        Synscapes(syn, "train", tasks=("height",))
    (syn / "img" / "class" / "3.png").unlink()
    with pytest.raises(UserError, match=r"3\.png is missing"):
        Synscapes(syn, "train", tasks=("seg",))[2]


def test_synthesize_streetview_cli(tmp_path: Path) -> None:
    from semimtl_geo.cli.main import main

    out = tmp_path / "fx"
    assert main(["synthesize-streetview", "-o", str(out), "--size", "32x64",
                 "--frames-per-city", "1", "--synscapes-frames", "5"]) == 0
    assert len(Cityscapes(out / "cityscapes", "val", size=None)) == 1
    disp = Image.open(next((out / "cityscapes" / "disparity" / "val").glob("*/*.png")))
    assert disp.mode in ("I;16", "I") and np.asarray(disp).dtype == np.uint16
    assert np.load(out / "synscapes" / "img" / "depth" / "1.npy").dtype == np.float32
    assert Synscapes(out / "synscapes", "val", size=None).ids == ["5"]  # 5 frames: 4/1/0
    assert main(["synthesize-streetview", "-o", str(out)]) == 1  # refuses to overwrite
    assert not list(out.glob(".*"))  # no half-written temporary folders left behind
