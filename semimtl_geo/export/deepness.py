"""Metadata the QGIS Deepness plugin reads from an ONNX model (PUTvision/qgis-plugin-deepness).

Deepness reads ``model.metadata_props`` entries whose values are JSON-encoded strings
(docs: ``creators_add_metadata_to_model.rst``; source:
``src/deepness/processing/models/model_base.py``, ``get_metadata_*``):

* ``model_type``: ``"Segmentor"`` or ``"Regressor"`` (one output layer per file in the
  plugin versions that check ``check_loaded_model_outputs``, hence one file per task);
* ``class_names``: ``{"0": name, ...}``, consecutive ids from 0;
* ``resolution``: centimetres per pixel;
* ``tiles_size`` in the documentation, ``tile_size`` in the source (both written; the
  plugin also takes the tile size from the input shape, which is fixed here);
* ``tiles_overlap``: percent;
* ``seg_thresh``: 0 disables the probability threshold (plain arg-max, like ``predict``);
* ``seg_small_segment``: 0 disables the plugin's small-segment filter (a median blur of
  the class map; without the key its dialog defaults to 9 px), so classes stay ``predict``'s;
* ``reg_output_scaling``: multiplier on the regression output (metres per model unit).

Deepness scales ``uint8`` pixels by ``1/255`` and then, only when the model carries
``standardization_mean``/``standardization_std``, standardises them. Our normalisation is
baked into the graph (:mod:`semimtl_geo.export.graph`), so those keys are deliberately
not written: the plugin would otherwise standardise twice.
"""

import json
from typing import Any

from semimtl_geo.checkpoint import ModelMeta

#: Deepness ``model_type`` for each of our tasks.
MODEL_TYPES = {"seg": "Segmentor", "height": "Regressor"}

#: Keys Deepness would apply on top of the baked-in normalisation; never written.
STANDARDIZATION_KEYS = ("standardization_mean", "standardization_std")


def deepness_metadata(meta: ModelMeta, task: str, tile_size: int, bands: int) -> dict[str, Any]:
    """Metadata values (not yet JSON-encoded) for one exported task.

    Args:
        meta: the checkpoint's :class:`ModelMeta`.
        task: ``"seg"`` or ``"height"``.
        tile_size: the square input size the graph is exported for.
        bands: number of input bands.

    Returns:
        Key to value; :func:`encode_metadata` turns it into ``metadata_props`` strings.

    """
    data: dict[str, Any] = {"model_type": MODEL_TYPES[task]}
    if task == "seg":
        data["class_names"] = {str(i): name for i, name in enumerate(meta.classes.names)}
        data["seg_thresh"] = 0.0
        data["seg_small_segment"] = 0
    else:
        data["class_names"] = {"0": f"height_{meta.height_unit}"}
        data["reg_output_scaling"] = float(meta.height_scale)
    if meta.gsd is not None:
        data["resolution"] = round(float(meta.gsd) * 100.0, 6)
    data["tiles_size"] = int(tile_size)
    data["tile_size"] = int(tile_size)
    data["tiles_overlap"] = int(round(float(meta.overlap) * 100.0))
    # Our own keys (ignored by Deepness): what the bands are and where the file came from.
    data["input_bands"] = list(meta.bands)[:bands]
    data["height_unit"] = meta.height_unit
    data["producer"] = "semimtl-geo"
    return data


def encode_metadata(values: dict[str, Any]) -> dict[str, str]:
    """JSON-encode every value, as Deepness's ``json.loads`` expects."""
    return {key: json.dumps(value) for key, value in values.items()}
