"""Input value range (issue 13): the checkpoint records what the model was trained on;
inputs of another dtype are refused in one sentence or rescaled by an explicit option.

Before: a 12-bit copy of a tile was divided by 255 and came out mostly one class with
heights ten times too high, exit 0.
"""

from pathlib import Path

import _toy_kind as toy
import numpy as np
import pytest
import rasterio
from _predict_helpers import textured, tiny_checkpoint, write_raster

from semimtl_geo.checkpoint import ModelMeta, load_model_checkpoint, save_model_checkpoint
from semimtl_geo.cli.main import main
from semimtl_geo.errors import UserError
from semimtl_geo.inference import predict_array
from semimtl_geo.inference.scaling import plan_mapping

FAST = ["--device", "cpu", "--no-preview", "--batch-size", "8"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.ckpt")


@pytest.fixture(scope="module")
def tiles(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiles")
    image = textured(64, 64)
    return {
        "uint8": write_raster(root / "u8.tif", image),
        "uint16": write_raster(root / "u12.tif", image.astype(np.uint16) * 16),  # 12-bit
        "float32": write_raster(root / "refl.tif", image.astype(np.float32) / 255.0),
    }


def _read(folder: Path, stem: str) -> tuple[np.ndarray, np.ndarray]:
    with rasterio.open(folder / f"{stem}_class.tif") as c, \
            rasterio.open(folder / f"{stem}_height.tif") as h:
        return c.read(1), h.read(1)


@pytest.mark.parametrize(("kind", "advice"), [("uint16", "--scale 0.0625"),
                                              ("float32", "--scale 255")])
def test_other_dtypes_are_refused_with_the_option_named(tmp_path, ckpt, tiles, capsys, kind,
                                                        advice):
    out = tmp_path / "out"
    assert main(["predict", str(tiles[kind]), "-o", str(out), "--checkpoint", str(ckpt),
                 *FAST]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert f"holds {kind} values but the model was trained on uint8 values 0-255" in err
    assert "--rescale percentile" in err and advice in err
    assert not out.exists()


def test_scale_option_reproduces_the_8bit_result(tmp_path, ckpt, tiles):
    out = tmp_path / "out"
    assert main(["predict", str(tiles["uint8"]), "-o", str(out), "--checkpoint", str(ckpt),
                 *FAST]) == 0
    ref_class, ref_height = _read(out, "u8")
    assert main(["predict", str(tiles["uint16"]), "-o", str(out), "--checkpoint", str(ckpt),
                 *FAST, "--scale", "0.0625"]) == 0
    cls, height = _read(out, "u12")
    np.testing.assert_array_equal(cls, ref_class)
    np.testing.assert_allclose(height, ref_height, atol=1e-4)
    assert main(["predict", str(tiles["float32"]), "-o", str(out), "--checkpoint", str(ckpt),
                 *FAST, "--scale", "255"]) == 0
    cls, height = _read(out, "refl")
    assert (cls == ref_class).mean() > 0.999
    np.testing.assert_allclose(height, ref_height, atol=1e-3)


@pytest.mark.parametrize("mode", ["minmax", "percentile"])
def test_rescale_stretches_the_same_for_every_dtype(tmp_path, ckpt, tiles, mode):
    """A stretch depends on the values' shape, not their unit: every copy agrees."""
    out = tmp_path / "out"
    results = []
    for kind in ("uint8", "uint16", "float32"):
        assert main(["predict", str(tiles[kind]), "-o", str(out), "--checkpoint", str(ckpt),
                     *FAST, "--rescale", mode]) == 0
        results.append(_read(out, tiles[kind].stem))
    for cls, height in results[1:]:
        assert (cls == results[0][0]).mean() > 0.999
        np.testing.assert_allclose(height, results[0][1], atol=1e-2)


def test_rescale_none_feeds_values_unchanged(tmp_path, ckpt, tiles):
    out = tmp_path / "out"
    assert main(["predict", str(tiles["float32"]), "-o", str(out), "--checkpoint", str(ckpt),
                 *FAST, "--rescale", "none"]) == 0
    assert (out / "refl_class.tif").is_file()


def test_mapping_rules():
    sample = lambda: np.array([[0.0, 50.0, 100.0]])  # noqa: E731
    assert plan_mapping("uint8", "uint8", [0, 255], "x", None, None, sample).identity
    with pytest.raises(UserError, match="pass only one"):
        plan_mapping("uint16", "uint8", [0, 255], "x", "minmax", 2.0, sample)
    with pytest.raises(UserError, match="positive number"):
        plan_mapping("uint16", "uint8", [0, 255], "x", None, -1.0, sample)
    with pytest.raises(UserError, match="no valid pixels"):
        plan_mapping("uint16", "uint8", [0, 255], "x", "minmax", None,
                     lambda: np.zeros((1, 0)))
    mapping = plan_mapping("uint16", "uint8", [0, 255], "x", "minmax", None, sample)
    np.testing.assert_allclose(mapping.apply(np.array([[[0, 50, 100, 200]]], np.uint16)),
                               [[[0.0, 127.5, 255.0, 255.0]]])
    mapping = plan_mapping("float32", "uint8", [0, 255], "x", None, 255.0, sample)
    np.testing.assert_allclose(mapping.apply(np.array([[[0.5, 2.0]]], np.float32)),
                               [[[127.5, 255.0]]])


def test_predict_array_applies_the_same_rule(ckpt):
    loaded = load_model_checkpoint(ckpt)
    image = textured(40, 40)
    with pytest.raises(UserError, match="holds uint16 values"):
        predict_array(loaded, image.astype(np.uint16) * 16, patch_size=64)
    ref = predict_array(loaded, image, patch_size=64)
    got = predict_array(loaded, image.astype(np.uint16) * 16, patch_size=64, value_scale=1 / 16)
    np.testing.assert_array_equal(got["class"], ref["class"])


def test_checkpoint_records_the_training_value_range(tmp_path):
    toy.register()
    try:
        from semimtl_geo.training.config import config_from_dict
        from semimtl_geo.training.engine import train

        cfg = config_from_dict(toy.toy_config_dict("stl_seg", max_steps=1, steps_per_epoch=1))
        result = train(cfg, tmp_path / "run")
    finally:
        toy.unregister()
    for path in (result.model_path, result.checkpoint):
        meta = load_model_checkpoint(path).meta
        assert (meta.input_dtype, meta.input_range) == ("uint8", [0.0, 255.0])


def test_older_checkpoints_without_the_fields_load_as_uint8(tmp_path, ckpt, monkeypatch):
    """Checkpoints written before the fields existed were all trained on uint8 0-255."""
    meta = ModelMeta().to_dict()
    assert meta.pop("input_dtype") == "uint8" and meta.pop("input_range") == [0.0, 255.0]
    old = ModelMeta.from_dict(meta)
    assert old.input_dtype == "uint8" and old.input_range == [0.0, 255.0]
    # a whole file without them, whatever the checkpoint file format
    real = ModelMeta.to_dict

    def old_to_dict(self):
        data = real(self)
        del data["input_dtype"], data["input_range"]
        return data

    monkeypatch.setattr(ModelMeta, "to_dict", old_to_dict)
    model = load_model_checkpoint(ckpt).model
    legacy = save_model_checkpoint(tmp_path / "legacy.ckpt", model,
                                   ModelMeta(bands=["R", "G", "B"]))
    monkeypatch.undo()
    loaded = load_model_checkpoint(legacy)
    assert (loaded.meta.input_dtype, loaded.meta.input_range) == ("uint8", [0.0, 255.0])
    with pytest.raises(UserError, match="holds uint16 values"):
        predict_array(loaded, textured(40, 40).astype(np.uint16))


def test_meta_round_trip_keeps_other_ranges():
    meta = ModelMeta(input_dtype="uint16", input_range=[0, 4095])
    back = ModelMeta.from_dict(meta.to_dict())
    assert (back.input_dtype, back.input_range) == ("uint16", [0.0, 4095.0])
