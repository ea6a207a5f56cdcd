"""The typed manifest reads the files older versions wrote (keys they lacked get defaults)."""

import json

import pytest

from semimtl_geo.classes import ISPRS_CLASSES
from semimtl_geo.data.isprs.loaders import dataset_info, list_isprs_tiles
from semimtl_geo.data.isprs.manifest import Manifest, load_manifest
from semimtl_geo.errors import UserError

#: A format-1 manifest as an early prepare-isprs wrote it: no ignore index, grid or height
#: facts, no provenance per tile.
OLD = {
    "format": 1,
    "classes": ISPRS_CLASSES.to_dict(),
    "datasets": {
        "vaihingen": {
            "bands": ["IR", "R", "G"],
            "gsd": 0.09,
            "mean": [0.4, 0.3, 0.3],
            "std": [0.2, 0.2, 0.2],
            "tiles": [{"tile_id": "1", "split": "train", "image": "vaihingen/image/v1.tif",
                       "label": "vaihingen/label/v1.tif", "width": 64, "height": 48,
                       "transform": [0.09, 0, 0, 0, -0.09, 0], "crs": "EPSG:32632"}],
        }
    },
}


def test_an_old_manifest_loads_with_defaults(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps(OLD))
    m = load_manifest(tmp_path)
    assert (m.ignore_index, m.patch_size, m.overlap) == (255, 512, 0.5)
    entry = m.datasets["vaihingen"]
    assert (entry.height_scale, entry.height_unit, entry.has_labels) == (30.0, "m", True)
    info = dataset_info(tmp_path, "vaihingen")
    assert info.classes == ISPRS_CLASSES and info.bands == ("IR", "R", "G")
    (tile,) = list_isprs_tiles(tmp_path, "vaihingen", "train")
    assert tile.height_path is None and tile.mask_path == tmp_path / "vaihingen/label/v1.tif"
    with pytest.raises(UserError, match="holds no prepared potsdam tiles"):
        dataset_info(tmp_path, "potsdam")
    again = Manifest.from_dict(m.to_dict())
    assert again == m


def test_a_manifest_with_wrong_types_is_one_sentence(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"datasets": {"vaihingen": [1]}}))
    with pytest.raises(UserError, match="is not a readable manifest"):
        load_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("[1, 2]")
    with pytest.raises(UserError, match="is not a readable manifest"):
        load_manifest(tmp_path)
