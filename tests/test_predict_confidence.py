"""``predict --confidence``: the blended probability of the predicted class as a raster."""

from xml.etree import ElementTree as ET

import numpy as np
import pytest
import rasterio
import torch
from _predict_helpers import stub_loaded, textured, tiny_checkpoint, write_raster
from affine import Affine

from semimtl_geo.cli.main import main
from semimtl_geo.errors import UserError
from semimtl_geo.inference import WindowPredictor, predict_raster
from semimtl_geo.inference.writers import CONFIDENCE_NODATA, confidence_to_file


def test_confidence_matches_the_pixelwise_softmax_exactly(tmp_path):
    """A pixel-wise network: every window gives a pixel the same probabilities, so the
    blended confidence is exactly that pixel's softmax maximum."""
    data = textured(70, 90)
    src = write_raster(tmp_path / "t.tif", data)
    predictor = WindowPredictor(stub_loaded(patch_size=32, overlap=0.5), device="cpu")
    result = predict_raster(predictor, src, tmp_path / "out", preview=False, confidence=True)
    assert result.confidence_tif == tmp_path / "out" / "t_confidence.tif"
    assert result.confidence_qml == tmp_path / "out" / "t_confidence.qml"
    with rasterio.open(result.confidence_tif) as ds:
        got = ds.read(1)
    x = (torch.from_numpy(data[:1]).float() / 255 - 0.5) / 0.25  # StubNet: band 0
    centres = torch.linspace(-2, 2, 6).view(-1, 1, 1)
    expected = torch.softmax(-10 * (x - centres) ** 2, dim=0).max(dim=0).values.numpy()
    np.testing.assert_array_equal(got, np.rint(expected * 100).astype(np.uint8))
    assert got.min() < 60 and got.max() == 100  # both confident and uncertain pixels


def test_confidence_raster_range_grid_nodata_and_style(tmp_path):
    ckpt = tiny_checkpoint(tmp_path / "tiny.ckpt")
    data = textured(70, 90)
    valid = np.ones((70, 90), bool)
    valid[:10, :] = False  # a nodata strip (all bands 0)
    valid[30:40, 50:60] = False
    data[:, ~valid] = 0
    transform = Affine(0.08, 0.03, 500000.0, 0.02, -0.1, 5800000.0)  # rotated grid
    src = write_raster(tmp_path / "scene.tif", data, nodata=0, transform=transform)
    out = tmp_path / "out"
    assert main(["predict", str(src), "-o", str(out), "--checkpoint", str(ckpt), "--device",
                 "cpu", "--no-preview", "--confidence"]) == 0
    with rasterio.open(src) as s, rasterio.open(out / "scene_confidence.tif") as c, \
            rasterio.open(out / "scene_class.tif") as k:
        assert (c.width, c.height) == (s.width, s.height)
        assert c.transform == s.transform and c.crs == s.crs
        assert c.dtypes[0] == "uint8" and c.nodata == CONFIDENCE_NODATA
        assert c.units[0] == "%"
        assert c.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        conf, classes = c.read(1), k.read(1)
    np.testing.assert_array_equal(conf == CONFIDENCE_NODATA, classes == 255)
    assert (conf[~valid] == CONFIDENCE_NODATA).all()
    values = conf[valid]
    # The chosen class has the largest of 6 probabilities: at least 1/6.
    assert values.min() >= 16 and values.max() <= 100
    assert values.max() > values.min()
    qml = ET.parse(out / "scene_confidence.qml").getroot()
    renderer = qml.find("pipe/rasterrenderer")
    assert renderer.get("type") == "singlebandpseudocolor"
    assert (renderer.get("classificationMin"), renderer.get("classificationMax")) == ("0", "100")
    items = renderer.findall("rastershader/colorrampshader/item")
    assert items[0].get("label") == "0.00 %" and items[-1].get("label") == "100.00 %"
    assert items[0].get("color") != items[-1].get("color")


def test_confidence_needs_the_segmentation_task(tmp_path):
    src = write_raster(tmp_path / "t.tif", textured(40, 40))
    predictor = WindowPredictor(stub_loaded(patch_size=32), device="cpu", tasks="height")
    with pytest.raises(UserError, match="--confidence needs the 'seg' task"):
        predict_raster(predictor, src, tmp_path / "out", preview=False, confidence=True)
    assert not (tmp_path / "out" / "t_height.tif").exists()


def test_confidence_to_file():
    probs = np.array([[[0.2, np.nan], [0.5, 0.996]], [[0.8, np.nan], [0.5, 0.004]]])
    valid = np.array([[True, False], [True, True]])
    np.testing.assert_array_equal(confidence_to_file(probs, valid), [[80, 255], [50, 100]])
