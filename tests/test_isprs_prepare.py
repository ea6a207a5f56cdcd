"""`semimtl-geo prepare-isprs` on synthetic archives of every layout and on the torchgeo fixture."""

import json
import math
import shutil
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image
from rasterio.enums import ColorInterp
from rasterio.errors import NotGeoreferencedWarning

from semimtl_geo.cli.main import main
from semimtl_geo.data import isprs
from semimtl_geo.data.isprs.manifest import Manifest
from semimtl_geo.data.isprs.prepare import colors_to_classes
from semimtl_geo.data.isprs.synthesize import synthesize_isprs

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "torchgeo-isprs"
P_SIZE, V_SIZE = 180, 96  # Potsdam px at 5 cm (-> 100 px at 9 cm), Vaihingen nominal px


def _read(path, band=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path) as src:
            profile = dict(src.profile, colorinterp=src.colorinterp)
            return (src.read() if band is None else src.read(band)), profile, src.transform


def _synth(root, layout="zips", nesting="real", tiles=(3, 3), size=(P_SIZE, V_SIZE)):
    synthesize_isprs(root, size_potsdam=size[0], size_vaihingen=size[1], tiles_potsdam=tiles[0],
                     tiles_vaihingen=tiles[1], layout=layout, nesting=nesting, seed=1,
                     orthos=("IRRG", "RGBIR"))
    return root


def _prepare(src, out, *extra):
    return main(["prepare-isprs", "--potsdam", str(src / "potsdam"), "--vaihingen",
                 str(src / "vaihingen"), "-o", str(out), "--no-progress", "--no-preview", *extra])


def _expected_patches(width, height, patch=512, overlap=0.5):
    stride = math.floor(patch * (1 - overlap))  # the one grid's stride (semimtl_geo.grid)

    def n(length):
        return 1 if length <= patch else math.ceil((length - patch) / stride) + 1

    return n(width) * n(height)


def _check_prepared(out, n_potsdam, n_vaihingen):
    manifest = json.loads((out / "manifest.json").read_text())
    assert Manifest.from_dict(manifest).to_dict() == manifest  # the typed form is the file
    assert manifest["target_gsd"] == 0.09
    assert manifest["classes"]["names"][1] == "building"
    for ds, n in (("potsdam", n_potsdam), ("vaihingen", n_vaihingen)):
        entry = manifest["datasets"][ds]
        assert len(entry["tiles"]) == n and not entry["failed"]
        assert entry["split"]["train"] and entry["split"]["test"]
        assert entry["has_height"] and entry["height_scale"] == isprs.DEFAULT_HEIGHT_SCALE
        assert len(entry["mean"]) == 3 and all(0 < s < 1 for s in entry["std"])
        total = {"train": 0, "test": 0}
        for t in entry["tiles"]:
            img, prof, tr = _read(out / t["image"])
            lab, lprof, ltr = _read(out / t["label"], 1)
            nd, nprof, ntr = _read(out / t["ndsm"], 1)
            # One grid for all layers, at the target GSD, float64 transform as in the manifest.
            assert tr == ltr == ntr
            assert list(tr)[:6] == t["transform"]
            assert tr.a == pytest.approx(0.09) and tr.e == pytest.approx(-0.09)
            assert img.shape[1:] == lab.shape == nd.shape == (t["height"], t["width"])
            assert prof["dtype"] == "uint8" and prof["colorinterp"][0] == ColorInterp.gray
            assert prof["crs"] == lprof["crs"] == nprof["crs"]
            if ds == "potsdam":
                assert prof["crs"].to_epsg() == 32633
            else:
                assert prof["crs"].to_epsg() == 32632 and t["georeferencing"] == "local"
            assert set(np.unique(lab).tolist()) <= {0, 1, 2, 3, 4, 5, 255}
            assert lprof["nodata"] == 255
            assert math.isnan(nprof["nodata"]) and nprof["dtype"] == "float32"
            assert np.nanmin(nd) >= 0.0 and np.nanmax(nd) <= 1.0 and np.isfinite(nd).mean() > 0.99
            assert t["patches"] == _expected_patches(t["width"], t["height"])
            total[t["split"]] += t["patches"]
        assert entry["patch_counts"] == total
    assert manifest["datasets"]["vaihingen"]["local_grid"]["crs"] == "EPSG:32632"
    assert not list(out.rglob("*.partial"))
    return manifest


@pytest.mark.parametrize(
    "layout,nesting",
    [("zips", "real"), ("outer-zip", "real"), ("extracted", "real"), ("zips", "flat"),
     ("zips", "nested")],
)
def test_prepare_every_layout(tmp_path, layout, nesting):
    src = _synth(tmp_path / "src", layout, nesting)
    assert _prepare(src, tmp_path / "out") == 0
    manifest = _check_prepared(tmp_path / "out", 3, 3)
    pots = manifest["datasets"]["potsdam"]
    assert pots["bands"] == ["IR", "R", "G"] and pots["image_product"] == ["IRRG"]
    t313 = next(t for t in pots["tiles"] if t["tile_id"] == "3_13")
    assert "fitted" in t313["ndsm_note"]  # the one-row-short nDSM was padded
    assert t313["width"] == t313["height"] == int(P_SIZE * 0.05 / 0.09)
    if layout == "outer-zip":  # the outer zips themselves can be given instead of folders
        out2 = tmp_path / "out2"
        assert main(["prepare-isprs", "--potsdam", str(src / "potsdam/Potsdam.zip"),
                     "--vaihingen", str(src / "vaihingen/Vaihingen.zip"), "-o", str(out2),
                     "--no-progress", "--no-preview", "--tiles", "2_10"]) == 0
        m2 = json.loads((out2 / "manifest.json").read_text())["datasets"]
        assert [t["tile_id"] for t in m2["potsdam"]["tiles"]] == ["2_10"]
        assert len(m2["vaihingen"]["tiles"]) == 3  # no Vaihingen ids given: all areas
        src_name = m2["potsdam"]["tiles"][0]["sources"]["image"]
        assert src_name.endswith("Potsdam.zip!Potsdam/3_Ortho_IRRG.zip!3_Ortho_IRRG/"
                                 "top_potsdam_2_10_IRRG.tif")


def test_resampling_preserves_area_and_majority(tmp_path):
    src = _synth(tmp_path / "src", "extracted", tiles=(1, 1))
    out = tmp_path / "out"
    assert _prepare(src, out, "--labels", "noBoundary", "--preview") == 0
    assert (out / "potsdam/preview.png").stat().st_size > 1000
    # Potsdam 5 cm -> 9 cm: image mean preserved, labels = majority, nDSM averaged.
    s_img, _, _ = _read(src / "potsdam/3_Ortho_IRRG/top_potsdam_2_10_IRRG.tif")
    d_img, _, _ = _read(out / "potsdam/image/potsdam_2_10.tif")
    np.testing.assert_allclose(d_img.reshape(3, -1).mean(1), s_img.reshape(3, -1).mean(1), atol=2.0)
    s_lab, _, _ = _read(
        src / "potsdam/5_Labels_all_noBoundary/top_potsdam_2_10_label_noBoundary.tif")
    ids, unknown = colors_to_classes(s_lab)
    assert not unknown
    d_lab, _, _ = _read(out / "potsdam/label/potsdam_2_10.tif", 1)
    assert 255 in d_lab  # eroded boundaries stay ignore
    assert set(np.unique(d_lab)) <= set(np.unique(ids))  # never an interpolated id
    # Nearest-sampled source at the output pixel centres mostly agrees with the majority.
    h, w = d_lab.shape
    rows = ((np.arange(h) + 0.5) * 0.09 / 0.05).astype(int)
    cols = ((np.arange(w) + 0.5) * 0.09 / 0.05).astype(int)
    assert (ids[np.ix_(rows, cols)] == d_lab).mean() > 0.85
    jpg = np.asarray(Image.open(
        src / "potsdam/1_DSM_normalisation/dsm_potsdam_02_10_normalized_lastools.jpg"))
    d_nd, _, _ = _read(out / "potsdam/ndsm/potsdam_2_10.tif", 1)
    assert abs(float(np.nanmean(d_nd)) - jpg.mean() / 255.0) < 0.01
    # Vaihingen is already at 9 cm: copied exactly.
    top, _, _ = _read(src / "vaihingen/top/top_mosaic_09cm_area1.tif")
    v_img, _, _ = _read(out / "vaihingen/image/vaihingen_area1.tif")
    np.testing.assert_array_equal(top, v_img)


def test_potsdam_rgbir_bands_and_parallel_workers(tmp_path):
    src = _synth(tmp_path / "src", tiles=(2, 2))
    out = tmp_path / "out"
    assert main(["prepare-isprs", "--potsdam", str(src / "potsdam"), "-o", str(out), "--bands",
                 "RGBIR", "--gsd", "0.05", "-j", "2", "--no-progress", "--no-preview"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    entry = manifest["datasets"]["potsdam"]
    assert entry["bands"] == ["R", "G", "B", "IR"] and entry["gsd"] == 0.05
    img, prof, tr = _read(out / "potsdam/image/potsdam_2_10.tif")
    assert img.shape == (4, P_SIZE, P_SIZE) and ColorInterp.alpha not in prof["colorinterp"]
    with zipfile.ZipFile(src / "potsdam/4_Ortho_RGBIR.zip") as zf:
        zf.extract("4_Ortho_RGBIR/top_potsdam_2_10_RGBIR.tif", tmp_path)
    raw, _, raw_tr = _read(tmp_path / "4_Ortho_RGBIR/top_potsdam_2_10_RGBIR.tif")
    np.testing.assert_array_equal(img, raw)  # band 4 read as data, not as an alpha mask
    assert tr == raw_tr
    assert "vaihingen" not in manifest["datasets"]


def test_existing_output_needs_overwrite(tmp_path):
    src = _synth(tmp_path / "src", tiles=(1, 1), size=(64, 48))
    out = tmp_path / "out"
    assert _prepare(src, out) == 0
    assert _prepare(src, out) == 1
    assert _prepare(src, out, "--overwrite") == 0


def test_torchgeo_fixture(tmp_path, capsys):
    if not SHARED.is_dir():
        pytest.skip(f"shared fixture {SHARED} is not available")
    out = tmp_path / "out"
    args = ["prepare-isprs", "--potsdam", str(SHARED / "potsdam"), "--vaihingen",
            str(SHARED / "vaihingen"), "-o", str(out), "--no-progress", "--no-preview"]
    # The fixture has no nDSM: the default run names the missing files, --no-ndsm works.
    assert main(args) == 1
    assert "dsm_potsdam_{rr}_{cc}_normalized_lastools.jpg" in capsys.readouterr().err
    assert main([*args, "--no-ndsm"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    pots, vai = manifest["datasets"]["potsdam"], manifest["datasets"]["vaihingen"]
    assert pots["split"] == {"train": ["2_10", "2_11"], "test": ["5_15", "6_15"]}
    assert vai["split"] == {"train": ["1", "11"], "test": ["6", "24"]}
    assert not pots["has_height"] and not vai["has_height"]
    # Potsdam: IRRG taken from the RGBIR orthos; labels (not georeferenced) on the ortho grid.
    assert pots["image_product"] == ["RGBIR"]
    for t in pots["tiles"]:
        img, prof, tr = _read(out / t["image"])
        lab, _, ltr = _read(out / t["label"], 1)
        assert prof["crs"].to_epsg() == 32633 and tr == ltr
        assert (tr.c, tr.f) == (366976.5, 5808562.6) and tr.a == pytest.approx(0.09)
        assert img.shape == (3, 1, 1)  # 2x2 px at 5 cm -> 1 px at 9 cm
        assert set(np.unique(lab).tolist()) <= {0, 1, 2, 3, 5}
    # Vaihingen tops are not georeferenced: local grid at 9 cm, copied pixel for pixel.
    for t in vai["tiles"]:
        img, prof, tr = _read(out / t["image"])
        lab, _, ltr = _read(out / t["label"], 1)
        assert prof["crs"].to_epsg() == 32632 and tr == ltr
        assert tr.c == 500000.0 + 1000.0 * int(t["tile_id"]) and tr.a == pytest.approx(0.09)
        top, _, _ = _read(SHARED / "vaihingen/top" / f"top_mosaic_09cm_area{t['tile_id']}.tif")
        np.testing.assert_array_equal(img, top)
        gt, _, _ = _read(SHARED / "vaihingen" / f"top_mosaic_09cm_area{t['tile_id']}.tif")
        np.testing.assert_array_equal(lab, colors_to_classes(gt)[0])
        assert t["patches"] == 1


# --- errors ------------------------------------------------------------------------------


def test_missing_archive_names_expected_file(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["prepare-isprs", "--potsdam", str(empty), "-o", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "3_Ortho_IRRG.zip" in err and "top_potsdam_{r}_{c}_IRRG.tif" in err
    assert "Traceback" not in err
    assert main(["prepare-isprs", "--vaihingen", str(tmp_path / "nope"), "-o",
                 str(tmp_path / "o")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_missing_vaihingen_ndsm_is_named(tmp_path, capsys):
    src = _synth(tmp_path / "src", "extracted", tiles=(0, 2), size=(64, 48))
    shutil.rmtree(src / "vaihingen" / "ndsm")
    assert main(["prepare-isprs", "--vaihingen", str(src / "vaihingen"), "-o",
                 str(tmp_path / "o")]) == 1
    assert "ndsm/ndsm_09cm_matching_area{N}.bmp" in capsys.readouterr().err


def test_corrupt_zip_is_reported(tmp_path, capsys):
    src = _synth(tmp_path / "src", tiles=(1, 0), size=(64, 48))
    z = src / "potsdam" / "5_Labels_all.zip"
    z.write_bytes(z.read_bytes()[: len(z.read_bytes()) // 3])
    assert main(["prepare-isprs", "--potsdam", str(src / "potsdam"), "-o",
                 str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "5_Labels_all.zip" in err and "corrupt" in err and "Traceback" not in err


def test_shape_mismatch_fails_that_tile_only(tmp_path, capsys):
    src = _synth(tmp_path / "src", "extracted", tiles=(2, 0), size=(64, 48))
    bad = src / "potsdam/5_Labels_all/top_potsdam_3_13_label.tif"
    Image.fromarray(np.full((50, 64, 3), 255, np.uint8)).save(bad)
    out = tmp_path / "o"
    assert main(["prepare-isprs", "--potsdam", str(src / "potsdam"), "-o", str(out),
                 "--no-progress", "--no-preview"]) == 1
    err = capsys.readouterr().err
    assert "3_13" in err and "shape mismatch" in err
    assert (out / "potsdam/image/potsdam_2_10.tif").is_file()
    assert not list(out.rglob("potsdam_3_13*")) and not list(out.rglob("*.partial"))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["datasets"]["potsdam"]["failed"][0]["tile_id"] == "3_13"


def test_unknown_colors_become_ignore_and_are_counted(tmp_path, capsys):
    src = _synth(tmp_path / "src", "extracted", tiles=(0, 1), size=(64, 48))
    gt = (src / "vaihingen/ISPRS_semantic_labeling_Vaihingen_ground_truth_COMPLETE"
          / "top_mosaic_09cm_area1.tif")
    rgb = np.asarray(Image.open(gt)).copy()
    rgb[:3, :5] = (255, 0, 255)
    Image.fromarray(rgb).save(gt)
    out = tmp_path / "o"
    assert main(["prepare-isprs", "--vaihingen", str(src / "vaihingen"), "-o", str(out),
                 "--no-progress", "--no-preview"]) == 0
    err = capsys.readouterr().err
    assert "15 label pixels" in err and "255,0,255" in err
    lab, _, _ = _read(out / "vaihingen/label/vaihingen_area1.tif", 1)
    assert (lab[:3, :5] == 255).all()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["datasets"]["vaihingen"]["tiles"][0]["unknown_colors"] == {"255,0,255": 15}
