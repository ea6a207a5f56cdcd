"""STAC MLM model cards: written by export-onnx and train, valid, read back, used by predict.

Validation is pystac's JSON-schema validator with the MLM v1.4.0 schema (the version
``pystac.extensions.mlm`` writes) and the schemas it references, from
``tests/data/stac_schemas`` (no network: an unexpected schema URL fails the test).
"""

import json
from pathlib import Path

import _toy_kind as toy
import jsonschema  # noqa: F401  (a declared test dependency: a missing one fails, never skips)
import numpy as np
import pystac
import pytest
import rasterio
import yaml
from _predict_helpers import textured, tiny_checkpoint, write_raster
from pystac.extensions.mlm import AssetDetailedMLMExtension, ItemMLMExtension
from pystac.validation.stac_validator import JsonSchemaSTACValidator

from semimtl_geo.checkpoint import ModelMeta, save_model_checkpoint
from semimtl_geo.classes import ClassTable
from semimtl_geo.cli.main import main
from semimtl_geo.errors import UserError
from semimtl_geo.model_card import resolve_checkpoint
from semimtl_geo.models import MultiTaskNet

SCHEMAS = Path(__file__).with_name("data") / "stac_schemas"
CLASSES = ClassTable(("ground", "roof", "grass"), ((10, 20, 30), (200, 0, 0), (0, 160, 60)))
META = ModelMeta(classes=CLASSES, bands=["IR", "R", "G"], mean=[0.4, 0.5, 0.6],
                 std=[0.2, 0.25, 0.1], gsd=0.09, height_scale=30.0, patch_size=64, overlap=0.5)


class OfflineValidator(JsonSchemaSTACValidator):
    """pystac's validator with the extension schemas read from tests/data, never fetched."""

    def __init__(self) -> None:
        super().__init__()
        for name, version in (("mlm", "1.4.0"), ("raster", "1.1.0"),
                              ("classification", "1.1.0"), ("processing", "1.1.0")):
            uri = f"https://stac-extensions.github.io/{name}/v{version}/schema.json"
            self.schema_cache[uri] = json.loads((SCHEMAS / f"{name}-v{version}.json").read_text())

    def _get_schema(self, schema_uri: str) -> dict:
        if schema_uri not in self.schema_cache:
            raise AssertionError(f"validation needs a schema that is not vendored: {schema_uri}")
        return self.schema_cache[schema_uri]


def validate(path: Path) -> pystac.Item:
    item = pystac.Item.from_file(str(path))
    schemas = item.validate(validator=OfflineValidator())
    assert "https://stac-extensions.github.io/mlm/v1.4.0/schema.json" in schemas
    return item


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("card")
    model = MultiTaskNet("resnet18", 3, len(CLASSES), ("seg", "height"), None, 32).eval()
    config = {"method": "semimtl", "mode": "m2", "model": {"encoder": "resnet18",
              "encoder_weights": None},
              "data": {"crop_size": 64, "datasets": [
                  {"name": "potsdam", "kind": "isprs", "root": "data/isprs", "tasks": ["seg"]},
                  {"name": "vaihingen", "kind": "isprs", "root": "data/isprs",
                   "tasks": ["height"]}]},
              "loss": {"lambda_intra": 0.001, "lambda_inter": 0.0001}}
    ckpt = save_model_checkpoint(tmp / "run" / "model.pt", model, META, config)
    out = tmp / "onnx" / "isprs.onnx"
    assert main(["export-onnx", "--checkpoint", str(ckpt), "-o", str(out)]) == 0
    return {"ckpt": ckpt, "card": tmp / "onnx" / "isprs.stac.json", "model": model}


def test_export_writes_a_valid_mlm_item(exported):
    card = exported["card"]
    item = validate(card)
    mlm = ItemMLMExtension.ext(item)
    assert [t.value if hasattr(t, "value") else t for t in mlm.tasks] == [
        "semantic-segmentation", "regression"]
    assert mlm.framework == "pytorch"
    assert mlm.total_parameters == sum(p.numel() for p in exported["model"].parameters())
    (model_input,) = mlm.input
    assert [b if isinstance(b, str) else b.name for b in model_input.bands] == ["IR", "R", "G"]
    assert model_input.input.shape == [-1, 3, 64, 64]
    assert model_input.input.dim_order == ["batch", "channel", "height", "width"]
    raw = item.to_dict()["properties"]["mlm:input"][0]["value_scaling"]
    assert [v["type"] for v in raw] == ["z-score"] * 3
    # (pixel - 255 mean) / (255 std) == (pixel / 255 - mean) / std, the checkpoint's scaling
    assert [v["mean"] for v in raw] == pytest.approx([102.0, 127.5, 153.0])
    assert [v["stddev"] for v in raw] == pytest.approx([51.0, 63.75, 25.5])
    assert item.common_metadata.gsd == pytest.approx(0.09)
    assert item.properties["semimtl:tile_size"] == 64
    seg, height = item.to_dict()["properties"]["mlm:output"]
    assert seg["tasks"] == ["semantic-segmentation"] and seg["result"]["shape"] == [-1, 3, 64, 64]
    assert [(c["value"], c["name"], c["color_hint"]) for c in seg["classification:classes"]] == [
        (0, "ground", "0A141E"), (1, "roof", "C80000"), (2, "grass", "00A03C")]
    assert height["tasks"] == ["regression"] and height["result"]["shape"] == [-1, 1, 64, 64]
    assert height["semimtl:unit"] == "m" and height["semimtl:scale"] == 30.0
    assert item.properties["semimtl:method"] == "semimtl-M2"
    assert item.properties["semimtl:datasets"] == [
        {"name": "potsdam", "kind": "isprs", "tasks": ["seg"], "root": "data/isprs"},
        {"name": "vaihingen", "kind": "isprs", "tasks": ["height"], "root": "data/isprs"}]
    hyper = item.properties["mlm:hyperparameters"]
    assert hyper["method"] == "semimtl" and hyper["loss.lambda_inter"] == 0.0001

    assert set(item.assets) == {"checkpoint", "onnx_seg", "onnx_height"}
    for key, asset in item.assets.items():
        href = asset.href
        assert not Path(href).is_absolute(), href  # relative to the card: the folder can move
        assert (card.parent / href).resolve().is_file()
        kind = AssetDetailedMLMExtension.ext(asset).artifact_type
        assert kind == ("safetensors" if key == "checkpoint" else "onnx")
        assert "mlm:model" in asset.roles
    assert (card.parent / item.assets["checkpoint"].href).resolve() == exported["ckpt"].resolve()
    assert "mlm:checkpoint" in item.assets["checkpoint"].roles
    assert item.assets["onnx_height"].extra_fields["semimtl:task"] == "height"


def test_validation_has_teeth(exported, tmp_path):
    """The vendored schema rejects a card that breaks MLM (so the check above means something)."""
    data = json.loads(exported["card"].read_text())
    data["properties"]["mlm:input"][0]["input"]["dim_order"] = ["batch", "channel", "h", "w"]
    del data["properties"]["mlm:output"][0]["classification:classes"][0]["description"]
    bad = tmp_path / "bad.stac.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(pystac.errors.STACValidationError):
        validate(bad)


def test_train_writes_a_valid_card(tmp_path):
    toy.register()
    try:
        config = tmp_path / "toy.yaml"
        config.write_text(yaml.safe_dump(toy.toy_config_dict("jtl", max_steps=1,
                                                             steps_per_epoch=1)))
        run = tmp_path / "run"
        assert main(["train", "-c", str(config), "-o", str(run), "--accelerator", "cpu"]) == 0
    finally:
        toy.unregister()
    item = validate(run / "model.stac.json")
    assert item.properties["semimtl:method"] == "jtl"
    assert [d["name"] for d in item.properties["semimtl:datasets"]] == ["a", "b"]
    assert [d["tasks"] for d in item.properties["semimtl:datasets"]] == [["seg"], ["height"]]
    assert item.assets["checkpoint"].href == "model.pt"
    assert resolve_checkpoint(run / "model.stac.json") == run / "model.pt"


def test_predict_accepts_the_card(exported, tmp_path):
    raster = write_raster(tmp_path / "tile.tif", textured(64, 80))
    by_ckpt, by_card = tmp_path / "ckpt", tmp_path / "card"
    base = ["predict", str(raster), "--device", "cpu", "--no-preview"]
    assert main([*base, "-o", str(by_ckpt), "--checkpoint", str(exported["ckpt"])]) == 0
    assert main([*base, "-o", str(by_card), "--checkpoint", str(exported["card"])]) == 0
    for name in ("tile_class.tif", "tile_height.tif"):
        with rasterio.open(by_ckpt / name) as a, rasterio.open(by_card / name) as b:
            np.testing.assert_array_equal(a.read(), b.read())


def test_card_errors_are_one_sentence(exported, tmp_path, capsys):
    onnx = exported["card"].with_name("isprs_seg.onnx")
    with pytest.raises(UserError, match="is an ONNX file; predict runs PyTorch checkpoints: "
                                        "pass its model card"):
        resolve_checkpoint(onnx)
    data = json.loads(exported["card"].read_text())
    del data["assets"]["checkpoint"]
    only_onnx = tmp_path / "only_onnx.stac.json"
    only_onnx.write_text(json.dumps(data))
    with pytest.raises(UserError, match="no PyTorch checkpoint asset .*onnx_seg, onnx_height"):
        resolve_checkpoint(only_onnx)
    moved = tmp_path / "moved.stac.json"
    moved.write_text(exported["card"].read_text())
    raster = write_raster(tmp_path / "t.tif", textured(32, 32))
    assert main(["predict", str(raster), "-o", str(tmp_path / "o"), "--checkpoint",
                 str(moved)]) == 1
    err = capsys.readouterr().err
    assert "points to the checkpoint" in err and "does not exist" in err
    assert "Traceback" not in err
    (tmp_path / "broken.stac.json").write_text("{not json")
    with pytest.raises(UserError, match="could not be read as JSON"):
        resolve_checkpoint(tmp_path / "broken.stac.json")
    assert resolve_checkpoint(exported["ckpt"]) == exported["ckpt"]


def test_tiny_checkpoint_card_roundtrip(tmp_path):
    """A checkpoint without training config (save_model_checkpoint) still gets a valid card."""
    ckpt = tiny_checkpoint(tmp_path / "m.pt", gsd=0.5)
    assert main(["export-onnx", "--checkpoint", str(ckpt), "-o", str(tmp_path / "m.onnx"),
                 "--tasks", "seg"]) == 0
    item = validate(tmp_path / "m.stac.json")
    assert set(item.assets) == {"checkpoint", "onnx_seg"}
    assert item.to_dict()["properties"]["mlm:output"][0]["result"]["shape"][1] == 6


def test_card_names_the_seg_skip_decoder(tmp_path):
    """model.seg_skip shows in mlm:architecture; the paper's head is described as before."""
    from semimtl_geo.model_card import build_model_card

    def architecture(model_config):
        item = build_model_card(tmp_path / "m.stac.json", model_config, META, {}, [])
        return item.to_dict()["properties"]["mlm:architecture"]

    plain = MultiTaskNet("resnet18", 3, len(CLASSES), ("seg", "height"), None, 32).config()
    skip = MultiTaskNet("resnet18", 3, len(CLASSES), ("seg", "height"), None, 32,
                        seg_skip=True).config()
    assert "1/4-resolution" not in architecture(plain)
    assert architecture(plain).endswith("with a PSP segmentation head and a height head "
                                        "(SemiMTL, Wang et al., WACV 2022)")
    assert "PSP segmentation head fusing the 1/4-resolution features" in architecture(skip)
