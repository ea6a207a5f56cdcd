"""``semimtl-geo predict`` end to end: grids, nodata, styles, safety, vectors."""

import json
import os
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree as ET

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import torch
from _predict_helpers import UTM33, stub_loaded, textured, tiny_checkpoint, write_raster
from affine import Affine
from rasterio.enums import ColorInterp
from shapely.geometry import box

from semimtl_geo.checkpoint import load_model_checkpoint
from semimtl_geo.classes import ISPRS_CLASSES
from semimtl_geo.cli.main import main
from semimtl_geo.errors import UserError
from semimtl_geo.inference import WindowPredictor, predict_array, predict_raster
from semimtl_geo.inference.writers import HEIGHT_NODATA

FAST = ["--device", "cpu", "--no-preview", "--batch-size", "8"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.ckpt")


def _same_grid(a: Path, b: Path) -> None:
    with rasterio.open(a) as src, rasterio.open(b) as out:
        assert (out.width, out.height) == (src.width, src.height)
        assert out.transform == src.transform  # exact float64 equality
        assert out.crs == src.crs


@pytest.mark.parametrize("name,transform,crs", [
    ("northup", Affine(0.09, 0, 500000.0, 0, -0.09, 5800000.0), UTM33),
    ("rotated", Affine(0.08, 0.03, 500000.0, 0.02, -0.1, 5800000.0), UTM33),
    ("nonsquare", Affine(0.05, 0, 500000.0, 0, -0.12, 5800000.0), UTM33),
    ("nocrs", Affine(1.0, 0, 0.0, 0, 1.0, 0.0), None),
])
def test_outputs_on_exactly_the_input_grid(tmp_path, ckpt, capsys, name, transform, crs):
    src = write_raster(tmp_path / f"{name}.tif", textured(70, 90), crs=crs, transform=transform)
    out = tmp_path / "out"
    assert main(["predict", str(src), "-o", str(out), "--checkpoint", str(ckpt), *FAST]) == 0
    for suffix in ("_class.tif", "_height.tif"):
        _same_grid(src, out / f"{name}{suffix}")
    if crs is None:
        assert "no CRS" in capsys.readouterr().err


def test_class_and_height_files_are_styled_cogs(tmp_path, ckpt):
    src = write_raster(tmp_path / "t.tif", textured(80, 100))
    out = tmp_path / "out"
    assert main(["predict", str(src), "-o", str(out), "--checkpoint", str(ckpt),
                 "--device", "cpu"]) == 0
    with rasterio.open(out / "t_class.tif") as cls:
        assert cls.dtypes[0] == "uint8" and cls.nodata == 255
        assert cls.profile["tiled"] and cls.compression is not None
        cmap = cls.colormap(1)
        for i, color in enumerate(ISPRS_CLASSES.colors):
            assert cmap[i][:3] == tuple(color)
        assert json.loads(cls.tags(1)["CLASS_NAMES"]) == list(ISPRS_CLASSES.names)
        assert rasterio.shutil.exists(out / "t_class.tif")
        layout = cls.tags(ns="IMAGE_STRUCTURE").get("LAYOUT")
        assert layout == "COG"
    with rasterio.open(out / "t_height.tif") as hgt:
        assert hgt.dtypes[0] == "float32" and hgt.nodata == HEIGHT_NODATA
        assert hgt.units[0] == "m"
        assert hgt.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
    qml = ET.parse(out / "t_class.qml").getroot()
    renderer = qml.find("pipe/rasterrenderer")
    assert renderer.get("type") == "paletted"
    entries = renderer.findall("colorPalette/paletteEntry")
    assert [e.get("label") for e in entries] == list(ISPRS_CLASSES.names)
    assert entries[1].get("color") == "#0000ff" and entries[1].get("value") == "1"
    hq = ET.parse(out / "t_height.qml").getroot().find("pipe/rasterrenderer")
    assert hq.get("type") == "singlebandpseudocolor"
    items = hq.findall("rastershader/colorrampshader/item")
    assert len(items) >= 2 and items[0].get("label").endswith(" m")
    assert float(hq.get("classificationMax")) > float(hq.get("classificationMin"))
    png = out / "t_preview.png"
    assert png.stat().st_size > 1000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporaries left


def test_class_overviews_use_mode_never_average(tmp_path):
    from semimtl_geo.inference.writers import class_raster

    stripes = np.zeros((1100, 1100), np.uint8)
    stripes[:, 1::2] = 2  # averaging 0 and 2 would invent class 1
    out = class_raster(tmp_path / "s_class.tif", 1100, 1100, None, Affine.identity(),
                       ISPRS_CLASSES)
    out.write_rows(0, stripes)
    out.commit()
    with rasterio.open(tmp_path / "s_class.tif") as src:
        assert src.overviews(1), "COG should have overviews"
        ov = src.read(1, out_shape=(550, 550))  # served from the first overview
        assert set(np.unique(ov)) <= {0, 2}


def test_nodata_alpha_and_internal_mask_become_nodata(tmp_path, ckpt):
    data = textured(72, 96)
    hole = np.zeros((72, 96), bool)
    hole[10:30, 20:60] = True
    nod = data.copy()
    nod[:, hole] = 0
    write_raster(tmp_path / "nod.tif", nod, nodata=0)
    alpha = np.concatenate([data, np.where(hole, 0, 255).astype(np.uint8)[None]])
    write_raster(tmp_path / "alpha.tif", alpha, colorinterp=[ColorInterp.red, ColorInterp.green,
                                                             ColorInterp.blue, ColorInterp.alpha])
    write_raster(tmp_path / "msk.tif", data, mask=~hole)
    out = tmp_path / "out"
    assert main(["predict", str(tmp_path / "nod.tif"), str(tmp_path / "alpha.tif"),
                 str(tmp_path / "msk.tif"), "-o", str(out), "--checkpoint", str(ckpt),
                 *FAST]) == 0
    for stem in ("nod", "alpha", "msk"):
        with rasterio.open(out / f"{stem}_class.tif") as c, \
                rasterio.open(out / f"{stem}_height.tif") as h:
            cls, hgt = c.read(1), h.read(1)
        assert (cls[hole] == 255).all() and (cls[~hole] < 6).all(), stem
        assert (hgt[hole] == HEIGHT_NODATA).all() and np.isfinite(hgt[~hole]).all(), stem
        assert (hgt[~hole] != HEIGHT_NODATA).all(), stem


def _nodata_fixture(dtype, nodata):
    """Generated 3-band raster: where bands equal ``nodata``, and the expected valid mask.

    Column groups of a 6 x 8 raster: 0-1 every band is nodata (invalid); 2 only band 0;
    3 bands 0 and 1; 4 only band 2 (all three stay valid: GDAL's dataset-mask rule, a
    dark pixel with one zero band is data); 5-7 ordinary pixels.
    """
    data = textured(6, 8, seed=3).astype(dtype)
    data[:, :, 0:2] = nodata
    data[0, :, 2] = nodata
    data[0:2, :, 3] = nodata
    data[2, :, 4] = nodata
    valid = np.ones((6, 8), bool)
    valid[:, 0:2] = False
    return data, valid


@pytest.mark.parametrize("dtype,nodata", [(np.uint8, 0), (np.float32, -9999.0),
                                          (np.float32, float("nan"))])
def test_nodata_only_where_every_band_is_nodata(tmp_path, dtype, nodata):
    from semimtl_geo.inference.raster_io import open_input

    data, expected = _nodata_fixture(dtype, nodata)
    if isinstance(nodata, float) and np.isnan(nodata):
        expected[:, 2:5] = False  # a NaN band is not data, whatever the other bands say
    path = write_raster(tmp_path / "n.tif", data, nodata=nodata)
    src = open_input(path, 3, ["R", "G", "B"])
    try:
        pixels, valid = src.read_strip(0, 6)
    finally:
        src.close()
    np.testing.assert_array_equal(valid, expected)
    # end to end: outputs are nodata exactly there, and nodata never reaches the model
    loaded = stub_loaded()
    # float pixels on the 0-255 scale of the (uint8) model: fed unchanged on request
    result = predict_raster(WindowPredictor(loaded), path, tmp_path / "out", preview=False,
                            patch_size=64, rescale="none")
    with rasterio.open(result.class_tif) as c, rasterio.open(result.height_tif) as h:
        cls, hgt = c.read(1), h.read(1)
    np.testing.assert_array_equal(cls == 255, ~expected)
    np.testing.assert_array_equal(hgt == HEIGHT_NODATA, ~expected)
    (seen,) = loaded.model.seen
    assert torch.isfinite(seen).all()


def test_raster_path_matches_in_memory_path(tmp_path, ckpt):
    data = textured(90, 110)
    src = write_raster(tmp_path / "m.tif", data)
    out = tmp_path / "out"
    assert main(["predict", str(src), "-o", str(out), "--checkpoint", str(ckpt), *FAST]) == 0
    ref = predict_array(load_model_checkpoint(ckpt), data)
    with rasterio.open(out / "m_class.tif") as c, rasterio.open(out / "m_height.tif") as h:
        np.testing.assert_array_equal(c.read(1), ref["class"])
        np.testing.assert_allclose(h.read(1), ref["height"], rtol=1e-5, atol=1e-5)


def test_resampling_path_keeps_alignment(tmp_path):
    """0.18 m input, 0.09 m model: windows run at 2x and outputs land on the input grid."""
    image = np.full((3, 100, 140), 60, np.uint8)
    image[:, 30:70, 45:105] = 200
    src = write_raster(tmp_path / "coarse.tif", image,
                       transform=Affine(0.18, 0, 500000.0, 0, -0.18, 5800000.0))
    loaded = stub_loaded(gsd=0.09)
    result = predict_raster(WindowPredictor(loaded), src, tmp_path / "out", preview=False)
    assert result.scale == pytest.approx(2.0)
    assert loaded.model.seen[0].shape[-2:] == (64, 64)
    _same_grid(src, result.class_tif)
    with rasterio.open(result.height_tif) as h:
        hgt = h.read(1)
    ys, xs = np.nonzero(hgt > 0.5 * (hgt.max() + hgt.min()))
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (30, 69, 45, 104)
    # --no-resample keeps the native window size
    loaded = stub_loaded(gsd=0.09)
    result = predict_raster(WindowPredictor(loaded), src, tmp_path / "out2", preview=False,
                            resample=False)
    assert result.scale == 1.0


def test_refuses_to_overwrite_unless_asked(tmp_path, ckpt, capsys):
    src = write_raster(tmp_path / "o.tif", textured(64, 64))
    out = tmp_path / "out"
    args = ["predict", str(src), "-o", str(out), "--checkpoint", str(ckpt), *FAST]
    assert main(args) == 0
    before = (out / "o_class.tif").stat().st_mtime_ns
    capsys.readouterr()
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "already exists" in err and "--overwrite" in err
    assert (out / "o_class.tif").stat().st_mtime_ns == before
    assert main([*args, "--overwrite"]) == 0


def test_interrupted_run_leaves_no_partial_output(tmp_path, ckpt, monkeypatch):
    src = write_raster(tmp_path / "k.tif", textured(130, 130))
    out = tmp_path / "out"
    calls = {"n": 0}
    original = WindowPredictor.run_model  # the engine's model call

    def flaky(self, windows, grid, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(self, windows, grid, **kwargs)

    monkeypatch.setattr(WindowPredictor, "run_model", flaky)
    rc = main(["predict", str(src), "-o", str(out), "--checkpoint", str(ckpt), *FAST,
               "--batch-size", "1"])
    assert rc == 130  # Ctrl-C: click's Abort
    assert calls["n"] == 3
    assert not out.exists()  # neither final files nor temporaries, nor the folder it made


KILL_SCRIPT = """
import os, signal, sys
from semimtl_geo.inference import engine
real = engine.run_sliding_windows
def killer(grid, read_strip, predictor, sink, **kw):
    def sink_then_die(rows):
        sink(rows)
        os.kill(os.getpid(), signal.SIGKILL)   # killed after rows hit the disk
    return real(grid, read_strip, predictor, sink_then_die, **kw)
import semimtl_geo.inference.raster as raster
raster.run_sliding_windows = killer
from semimtl_geo.cli.main import main
main(sys.argv[1:])
"""


def test_killed_process_leaves_no_output_under_final_names(tmp_path, ckpt):
    src = write_raster(tmp_path / "sk.tif", textured(130, 130))
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-c", KILL_SCRIPT, "predict", str(src), "-o", str(out),
         "--checkpoint", str(ckpt), *FAST],
        capture_output=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == -9, proc.stderr.decode()[-500:]
    names = [p.name for p in out.iterdir()]
    assert names, "the run should have started writing temporaries"
    assert all(n.startswith(".") for n in names), names  # only hidden temporaries
    # the next run removes what the killed one left behind (issue 13)
    assert main(["predict", str(src), "-o", str(out), "--checkpoint", str(ckpt), *FAST]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "sk_class.qml", "sk_class.tif", "sk_height.qml", "sk_height.tif"]


def test_one_bad_input_does_not_stop_the_batch(tmp_path, ckpt, capsys):
    good = write_raster(tmp_path / "good.tif", textured(64, 64))
    (tmp_path / "corrupt.tif").write_bytes(b"II*\x00" + os.urandom(300))
    two = write_raster(tmp_path / "two.tif", textured(64, 64, count=2))
    out = tmp_path / "out"
    rc = main(["predict", str(tmp_path / "corrupt.tif"), str(two), str(good),
               str(tmp_path / "missing.tif"), "-o", str(out), "--checkpoint", str(ckpt), *FAST])
    assert rc == 1
    err = capsys.readouterr().err
    assert "corrupt.tif" in err and "could not be read" in err
    assert "two.tif" in err and "--bands" in err
    assert "missing.tif" in err and "does not exist" in err
    assert "Traceback" not in err
    assert (out / "good_class.tif").exists() and (out / "good_height.tif").exists()
    assert not (out / "two_class.tif").exists()


def test_bands_option_selects_and_orders_input_bands(tmp_path, ckpt):
    data = textured(64, 80, count=4)
    src = write_raster(tmp_path / "four.tif", data, descriptions=["B", "G", "R", "NIR"])
    out = tmp_path / "out"
    assert main(["predict", str(src), "-o", str(out), "--checkpoint", str(ckpt), *FAST,
                 "--bands", "3,2,1", "--tasks", "height"]) == 0
    assert not (out / "four_class.tif").exists()
    ref = predict_array(load_model_checkpoint(ckpt), data[[2, 1, 0]], tasks=["height"])
    with rasterio.open(out / "four_height.tif") as h:
        np.testing.assert_allclose(h.read(1), ref["height"], rtol=1e-5, atol=1e-5)
    # band names from the descriptions work too
    assert main(["predict", str(src), "-o", str(tmp_path / "o2"), "--checkpoint", str(ckpt),
                 *FAST, "--bands", "R,G,B", "--tasks", "height"]) == 0


def test_aoi_limits_prediction_and_empty_aoi_fails(tmp_path, ckpt, capsys):
    transform = Affine(0.09, 0, 500000.0, 0, -0.09, 5800000.0)
    src = write_raster(tmp_path / "a.tif", textured(64, 100), transform=transform)
    left = box(500000.0, 5800000.0 - 64 * 0.09, 500000.0 + 50 * 0.09, 5800000.0)
    gpd.GeoDataFrame(geometry=[left], crs=UTM33).to_crs(4326).to_file(tmp_path / "aoi.geojson")
    out = tmp_path / "out"
    assert main(["predict", str(src), "-o", str(out), "--checkpoint", str(ckpt), *FAST,
                 "--aoi", str(tmp_path / "aoi.geojson")]) == 0
    with rasterio.open(out / "a_class.tif") as c:
        cls = c.read(1)
    assert (cls[:, :49] < 6).all() and (cls[:, 51:] == 255).all()
    far = box(0, 0, 10, 10)
    gpd.GeoDataFrame(geometry=[far], crs=UTM33).to_file(tmp_path / "far.gpkg")
    capsys.readouterr()
    assert main(["predict", str(src), "-o", str(tmp_path / "o2"), "--checkpoint", str(ckpt),
                 *FAST, "--aoi", str(tmp_path / "far.gpkg")]) == 1
    assert "does not overlap" in capsys.readouterr().err


def test_vectorize_writes_valid_polygons_with_attributes(tmp_path, ckpt):
    src = write_raster(tmp_path / "v.tif", textured(64, 96))
    out = tmp_path / "out"
    assert main(["predict", str(src), "-o", str(out), "--checkpoint", str(ckpt), *FAST,
                 "--vectorize"]) == 0
    frame = gpd.read_file(out / "v_classes.gpkg")
    assert len(frame) > 0 and frame.geometry.is_valid.all()
    assert {"class_id", "class_name", "pixels", "area_m2", "height_mean",
            "height_max"} <= set(frame.columns)
    assert frame.crs == rasterio.crs.CRS.from_string(UTM33)
    np.testing.assert_allclose(frame.area_m2, frame.geometry.area, rtol=1e-6)
    with rasterio.open(out / "v_class.tif") as c, rasterio.open(out / "v_height.tif") as h:
        cls, hgt = c.read(1), h.read(1)
    assert frame.pixels.sum() == (cls != 255).sum()
    for cid, group in frame.groupby("class_id"):
        assert group.pixels.sum() == (cls == cid).sum()
        assert group.class_name.iloc[0] == ISPRS_CLASSES.names[cid]
        assert group.height_max.max() == pytest.approx(hgt[cls == cid].max(), rel=1e-5)
    assert (frame.height_max >= frame.height_mean - 1e-6).all()


def test_vectorize_stitches_regions_across_strips(tmp_path):
    from semimtl_geo.inference.vectorize import vectorize_classes
    from semimtl_geo.inference.writers import class_raster, height_raster

    rng = np.random.default_rng(0)
    cls = (rng.random((60, 50)) < 0.5).astype(np.uint8)
    cls[5:50, 10:20] = 3  # a region crossing many strip borders
    cls[0:3, :] = 255
    hgt = rng.random((60, 50)).astype(np.float32) * 10
    t = Affine(0.5, 0, 1000.0, 0, -0.5, 2000.0)
    c = class_raster(tmp_path / "c.tif", 50, 60, UTM33, t, ISPRS_CLASSES)
    c.write_rows(0, cls)
    c.commit()
    h = height_raster(tmp_path / "h.tif", 50, 60, UTM33, t)
    h.write_rows(0, hgt)
    h.commit()
    whole = gpd.read_file(vectorize_classes(tmp_path / "c.tif", tmp_path / "w.gpkg",
                                            ISPRS_CLASSES, tmp_path / "h.tif", strip_rows=1000))
    strips = gpd.read_file(vectorize_classes(tmp_path / "c.tif", tmp_path / "s.gpkg",
                                             ISPRS_CLASSES, tmp_path / "h.tif", strip_rows=7))
    assert len(strips) == len(whole)
    key = ["class_id", "pixels"]
    a = whole.sort_values(key + ["height_max"]).reset_index(drop=True)
    b = strips.sort_values(key + ["height_max"]).reset_index(drop=True)
    np.testing.assert_array_equal(a.pixels, b.pixels)
    np.testing.assert_allclose(a.height_mean, b.height_mean, rtol=1e-6)
    np.testing.assert_allclose(a.geometry.area, b.geometry.area)
    big = b[b.class_id == 3]
    assert len(big) == 1 and big.pixels.iloc[0] == 450
    assert big.geometry.iloc[0].geom_type == "Polygon"


def test_unknown_task_is_a_user_error(ckpt):
    loaded = load_model_checkpoint(ckpt)
    with pytest.raises(UserError, match="--tasks"):
        WindowPredictor(loaded, tasks="depth")


def test_rgb_byte_landsat_end_to_end(tmp_path, ckpt, shared_data):
    path = shared_data / "rasterio" / "RGB.byte.tif"
    if not path.exists():
        pytest.skip(f"{path} is absent")
    out = tmp_path / "out"
    assert main(["predict", str(path), "-o", str(out), "--checkpoint", str(ckpt),
                 "--device", "cpu", "--patch-size", "128", "--overlap", "0",
                 "--batch-size", "4", "--vectorize"]) == 0
    _same_grid(path, out / "RGB.byte_class.tif")
    _same_grid(path, out / "RGB.byte_height.tif")
    with rasterio.open(path) as src:
        valid = src.dataset_mask() > 0
    with rasterio.open(out / "RGB.byte_class.tif") as c:
        cls = c.read(1)
    assert (791, 718) == (cls.shape[1], cls.shape[0])
    np.testing.assert_array_equal(cls == 255, ~valid)
    assert (out / "RGB.byte_preview.png").exists() and (out / "RGB.byte_class.qml").exists()
    frame = gpd.read_file(out / "RGB.byte_classes.gpkg")
    assert frame.geometry.is_valid.all() and frame.pixels.sum() == valid.sum()


def test_default_height_ramp_table_is_matplotlibs_viridis():
    from matplotlib import colormaps

    from semimtl_geo.inference.qml import VIRIDIS_9, _ramp

    stops = len(VIRIDIS_9)
    sampled = ["#{:02x}{:02x}{:02x}".format(*(round(255 * c) for c in
                                              colormaps["viridis"](i / (stops - 1))[:3]))
               for i in range(stops)]
    assert list(VIRIDIS_9) == sampled
    assert [c for _, c in _ramp("viridis", stops)] == sampled
    assert _ramp("magma", 3)[0][1] != sampled[0]  # other ramps still come from matplotlib


@pytest.mark.parametrize("dtype, resampling", [("uint8", "MODE"), ("float32", "AVERAGE")])
def test_cog_overviews_from_an_uncompressed_temporary_are_the_same_file(
        tmp_path, dtype, resampling):
    """COG_TMP_COMPRESSION only changes the driver's temporary: the COG is the same bytes."""
    import rasterio.shutil

    from semimtl_geo.inference.writers import OutputRaster

    data = textured(1100, 1300, count=1)[0]
    data = (data % 6).astype(dtype) if dtype == "uint8" else data.astype(dtype) * 0.37
    out = OutputRaster(tmp_path / "new.tif", 1300, 1100, UTM33,
                       Affine(0.09, 0, 500000.0, 0, -0.09, 5800000.0), dtype, 255, resampling)
    out.write_rows(0, data)
    out.dst.close()
    tmp = out._tmp
    with rasterio.Env(COG_TMP_COMPRESSION="ZSTD"):  # the driver's default
        rasterio.shutil.copy(tmp, tmp_path / "default.tif", driver="COG", BLOCKSIZE=512,
                             OVERVIEWS="AUTO", RESAMPLING=resampling, BIGTIFF="IF_SAFER",
                             NUM_THREADS="ALL_CPUS", COMPRESS="ZSTD", LEVEL="1",
                             PREDICTOR="YES")
    out.dst = rasterio.open(tmp)  # commit closes it again
    out.commit()
    with rasterio.open(tmp_path / "new.tif") as new:
        assert new.overviews(1) == [2, 4] and new.compression.name.lower() == "zstd"
    assert (tmp_path / "new.tif").read_bytes() == (tmp_path / "default.tif").read_bytes()


def _small_output(path: Path, dtype: str, resampling: str):
    from semimtl_geo.inference.writers import OutputRaster

    data = textured(600, 700, count=1)[0]
    data = (data % 6).astype(dtype) if dtype == "uint8" else data.astype(dtype) * 0.37
    out = OutputRaster(path, 700, 600, UTM33, Affine(0.09, 0, 500000.0, 0, -0.09, 5800000.0),
                       dtype, 255, resampling)
    out.write_rows(0, data)
    return out


def test_commit_all_converts_at_once_the_same_bytes_as_one_by_one(tmp_path):
    from semimtl_geo.inference.writers import commit_all

    for folder in ("seq", "par"):
        (tmp_path / folder).mkdir()
    seq = [_small_output(tmp_path / "seq" / "c.tif", "uint8", "MODE"),
           _small_output(tmp_path / "seq" / "h.tif", "float32", "AVERAGE")]
    for out in seq:
        out.commit()
    commit_all([_small_output(tmp_path / "par" / "c.tif", "uint8", "MODE"),
                _small_output(tmp_path / "par" / "h.tif", "float32", "AVERAGE")])
    for name in ("c.tif", "h.tif"):
        assert (tmp_path / "par" / name).read_bytes() == (tmp_path / "seq" / name).read_bytes()
    assert sorted(p.name for p in (tmp_path / "par").iterdir()) == ["c.tif", "h.tif"]


def test_commit_all_finishes_every_commit_then_raises_the_first_error(tmp_path, monkeypatch):
    from semimtl_geo.inference.writers import OutputRaster, commit_all

    real = OutputRaster.commit

    def commit(self):
        if self.path.name == "h.tif":
            self.dst.close()
            raise OSError(28, "No space left on device", str(self.path))
        return real(self)

    monkeypatch.setattr(OutputRaster, "commit", commit)
    outs = [_small_output(tmp_path / "h.tif", "float32", "AVERAGE"),
            _small_output(tmp_path / "c.tif", "uint8", "MODE")]
    with pytest.raises(OSError, match="No space"):
        commit_all(outs)
    assert (tmp_path / "c.tif").is_file()  # the other conversion ran to its end
    for out in outs:
        out.discard()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.tif"]
