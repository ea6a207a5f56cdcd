"""The folder the commands of docs/errors.md run in: every file name they use exists here.

``build_sandbox(root)`` writes tiny versions of what a user has at hand (a checkpoint,
rasters of every awkward kind, a synthetic ISPRS download and its preparation, run
folders, configs) under the names the error table uses, so each table row is run
verbatim from ``root`` by tests/test_error_table.py.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import rasterio
import torch
import yaml
from _predict_helpers import textured, tiny_checkpoint, write_raster
from affine import Affine

from semimtl_geo.checkpoint import ModelMeta, save_model_checkpoint
from semimtl_geo.classes import ISPRS_CLASSES, ClassTable
from semimtl_geo.models import MultiTaskNet

REPO = Path(__file__).resolve().parents[1]


def _isprs_config(root: str = "prepared") -> dict:
    return {"data": {"datasets": [{"name": "potsdam", "kind": "isprs", "root": root,
                                   "tasks": ["seg"], "options": {}}]}}


def _model(path: Path, classes: ClassTable, tasks: tuple[str, ...], config: dict) -> Path:
    torch.manual_seed(0)
    model = MultiTaskNet("resnet18", in_channels=3, num_classes=len(classes), tasks=tasks,
                         encoder_weights=None, output_stride=32).eval()
    meta = ModelMeta(classes=classes, bands=["IR", "R", "G"], gsd=0.09, patch_size=64)
    return save_model_checkpoint(path, model, meta, config)


def _mismatch(path: Path) -> Path:
    """A checkpoint whose model description (7 classes) does not match its weights (6)."""
    from semimtl_geo.checkpoint import CHECKPOINT_KEY, checkpoint_payload
    from semimtl_geo.checkpoint_file import write_checkpoint_file

    model = MultiTaskNet("resnet18", in_channels=3, num_classes=6, tasks=("seg", "height"),
                         encoder_weights=None, output_stride=32)
    payload = checkpoint_payload(model, ModelMeta(bands=["IR", "R", "G"]), {})
    payload["model"]["num_classes"] = 7
    return write_checkpoint_file({CHECKPOINT_KEY: payload}, path)


def _legacy(path: Path) -> Path:
    """A checkpoint in the pickled format of earlier semimtl-geo versions."""
    from semimtl_geo.checkpoint import CHECKPOINT_KEY, checkpoint_payload

    model = MultiTaskNet("resnet18", in_channels=3, num_classes=6, tasks=("seg", "height"),
                         encoder_weights=None, output_stride=32)
    torch.save({CHECKPOINT_KEY: checkpoint_payload(model, ModelMeta(bands=["IR", "R", "G"]),
                                                   {})}, path)
    return path


def _damaged(path: Path) -> Path:
    profile = dict(driver="GTiff", width=128, height=128, count=3, dtype="uint8",
                   crs="EPSG:32633", transform=Affine(0.09, 0, 500000, 0, -0.09, 5800000),
                   tiled=True, blockxsize=32, blockysize=32, compress="deflate",
                   photometric="MINISBLACK")
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(textured(128, 128))
    with rasterio.open(path) as src:
        offset = int(src.get_tag_item("BLOCK_OFFSET_2_2", "TIFF", bidx=1))
        size = int(src.get_tag_item("BLOCK_SIZE_2_2", "TIFF", bidx=1))
    data = bytearray(path.read_bytes())
    data[offset:offset + size] = b"\xff" * size
    path.write_bytes(bytes(data))
    return path


def build_sandbox(root: Path) -> Path:
    """Create every file the error table's commands name, under ``root``."""
    from semimtl_geo.data.isprs.prepare import PrepareOptions, prepare_isprs
    from semimtl_geo.data.isprs.synthesize import synthesize_isprs

    root.mkdir(parents=True, exist_ok=True)
    tiny_checkpoint(root / "model.pt", gsd=0.09)
    _model(root / "isprs_model.pt", ISPRS_CLASSES, ("seg", "height"), _isprs_config())
    seven = ClassTable((*ISPRS_CLASSES.names, "water"), (*ISPRS_CLASSES.colors, (0, 0, 128)))
    _model(root / "seven_classes.pt", seven, ("seg",), _isprs_config())
    _model(root / "height_only.pt", ISPRS_CLASSES, ("height",), _isprs_config())

    image = textured(64, 64)
    write_raster(root / "tile.tif", image)
    write_raster(root / "tile16.tif", image.astype(np.uint16) * 16)
    write_raster(root / "reflectance.tif", image.astype(np.float32) / 255)
    write_raster(root / "one_band.tif", image[:1])
    write_raster(root / "four_bands.tif", textured(64, 64, count=4))
    _damaged(root / "damaged.tif")
    (root / "copy").mkdir()
    write_raster(root / "copy" / "tile.tif", image)
    (root / "done").mkdir()
    write_raster(root / "done" / "tile_class.tif", image[:1])
    (root / "notes.txt").write_text("field notes\n")
    (root / "notes").mkdir()
    (root / "notes" / "readme.txt").write_text("nothing to predict\n")
    (root / "empty").mkdir()
    (root / "far.geojson").write_text(json.dumps({
        "type": "FeatureCollection",
        "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32633"}},
        "features": [{"type": "Feature", "properties": {}, "geometry": {
            "type": "Polygon",
            "coordinates": [[[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]]]}}]}))
    (root / "bad.yaml").write_text("trainer: [unclosed\n")

    shutil.copytree(REPO / "configs", root / "configs")
    old = root / "runs" / "old"
    old.mkdir(parents=True)
    (old / "config.yaml").write_text(yaml.safe_dump(
        yaml.safe_load((REPO / "configs" / "isprs.yaml").read_text())))
    shutil.copy(root / "model.pt", old / "model.pt")
    (root / "runs" / "empty").mkdir()
    for name, data in (("broken", (root / "model.pt").read_bytes()[:5000]),
                       ("foreign", (root / "model.pt").read_bytes())):
        run = root / "runs" / name
        (run / "checkpoints").mkdir(parents=True)
        shutil.copy(old / "config.yaml", run / "config.yaml")
        (run / "checkpoints" / "last.ckpt").write_bytes(data)
    _mismatch(root / "mismatch.pt")
    _legacy(root / "legacy.pt")

    synthesize_isprs(root / "raw", size_potsdam=64, size_vaihingen=48, tiles_potsdam=1,
                     tiles_vaihingen=1)
    prepare_isprs(root / "raw" / "potsdam", root / "raw" / "vaihingen", root / "prepared",
                  PrepareOptions(progress=False, preview=False))
    (root / "sv" / "cityscapes").mkdir(parents=True)
    (root / "demo_old").mkdir()
    (root / "demo_old" / "thesis.tex").write_text("mine\n")
    (root / "profile").mkdir()
    return root
