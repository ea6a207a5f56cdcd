"""Run the QGIS Deepness plugin's own map processors headless on our ONNX exports.

Run by tests/test_deepness_parity.py with QGIS's Python (/usr/bin/python3, which has no
torch, pytest or semimtl_geo), never collected by pytest. Deepness's source comes from
``DEEPNESS_SRC`` (its ``src/`` folder). The parameters are filled from the model's
metadata exactly as Deepness's dock widget does when the file is loaded
(``deepness_dockwidget.py``, ``_load_default_model_parameters``), including its widget
defaults for keys the metadata lacks (small-segment filter on, 9 px).

Usage::

    deepness_driver.py DEEPNESS_SRC RASTER SEG_ONNX HEIGHT_ONNX OUT_NPZ

Writes ``OUT_NPZ`` with ``classes`` (class ids, Deepness's value - 1), ``height`` (the
regression raster as Deepness stores it) and ``padded`` (True where the value came from
a tile that reaches past the raster and was fed zeros there), and prints one JSON line
with the parameters used and where the result's first pixel sits in the raster
(``offset_px``, rows and columns).
"""

import json
import os
import sys

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

#: Deepness dock widget defaults (deepness_dockwidget.ui) used when metadata lacks a key.
UI_SMALL_SEGMENT_PX = 9


def main() -> None:
    deepness_src, raster, seg_path, height_path, out_npz = sys.argv[1:6]
    sys.path.insert(0, deepness_src)
    from unittest.mock import MagicMock

    import numpy as np
    from qgis.core import QgsApplication, QgsProject, QgsRasterLayer

    app = QgsApplication([], False)
    app.initQgis()

    from deepness.common.channels_mapping import ChannelsMapping, ImageChannelStandaloneBand
    from deepness.common.processing_overlap import ProcessingOverlap, ProcessingOverlapOptions
    from deepness.common.processing_parameters.map_processing_parameters import ProcessedAreaType
    from deepness.common.processing_parameters.regression_parameters import RegressionParameters
    from deepness.common.processing_parameters.segmentation_parameters import (
        SegmentationParameters,
    )
    from deepness.processing.map_processor.map_processing_result import (
        MapProcessingResultSuccess,
    )
    from deepness.processing.map_processor.map_processor_regression import (
        MapProcessorRegression,
    )
    from deepness.processing.map_processor.map_processor_segmentation import (
        MapProcessorSegmentation,
    )
    from deepness.processing.models.model_types import ModelDefinition
    from deepness.processing.tile_params import TileParams

    layer = QgsRasterLayer(raster, "input")
    if not layer.isValid():
        raise SystemExit(f"QGIS cannot open {raster}")
    QgsProject.instance().addMapLayer(layer)

    def load(path: str):
        """The model class named by the file's model_type, as Deepness's dialog picks it."""
        from deepness.processing.models.model_base import ModelBase

        model_type = ModelBase.get_model_type_from_metadata(path)
        for definition in ModelDefinition.get_model_definitions():
            if definition.model_type.value == model_type:
                model = definition.model_class(path)
                model.check_loaded_model_outputs()
                return model
        raise SystemExit(f"Deepness knows no model_type {model_type!r} ({path})")

    def common(model) -> dict:
        mapping = ChannelsMapping()
        mapping.set_image_channels([
            ImageChannelStandaloneBand(band_number=b + 1, name=f"band {b + 1}")
            for b in range(layer.bandCount())
        ])
        mapping.set_number_of_model_inputs(model.get_number_of_channels())
        return dict(
            resolution_cm_per_px=model.get_metadata_resolution(),
            tile_size_px=model.get_metadata_tile_size() or model.get_input_size_in_pixels()[0],
            batch_size=1,
            local_cache=False,
            processed_area_type=ProcessedAreaType.ENTIRE_LAYER,
            mask_layer_id=None,
            input_layer_id=layer.id(),
            input_channels_mapping=mapping,
            processing_overlap=ProcessingOverlap(
                ProcessingOverlapOptions.OVERLAP_IN_PERCENT,
                percentage=model.get_metadata_tiles_overlap(),
            ),
        )

    def run(processor) -> np.ndarray:
        processor.run()
        result = processor._processing_result
        if not isinstance(result, MapProcessingResultSuccess):
            raise SystemExit(f"Deepness failed: {result.message} {result.exception!r}")
        return np.asarray(processor.get_result_img())

    seg_model = load(seg_path)
    small = seg_model.get_metadata_segmentation_small_segment()
    threshold = seg_model.get_metadata_segmentation_threshold() or 0.0
    seg_params = SegmentationParameters(
        **common(seg_model),
        postprocessing_dilate_erode_size=UI_SMALL_SEGMENT_PX if small is None else small,
        pixel_classification__probability_threshold=threshold,
        model=seg_model,
    )
    seg = MapProcessorSegmentation(rlayer=layer, vlayer_mask=None, map_canvas=MagicMock(),
                                   params=seg_params)
    classes = run(seg)[0].astype(np.int16) - 1  # Deepness stores class + 1 (its "MADD1")

    reg_model = load(height_path)
    reg_params = RegressionParameters(
        **common(reg_model),
        output_scaling=reg_model.get_metadata_regression_output_scaling() or 1.0,
        model=reg_model,
    )
    reg = MapProcessorRegression(rlayer=layer, vlayer_mask=None, map_canvas=MagicMock(),
                                 params=reg_params)
    height_img = run(reg)
    height = height_img[0]

    # Which output pixels come from a tile that reaches past the raster (zero-filled there):
    # paint each tile's copied area with its flag through Deepness's own tile geometry.
    extent = layer.extent()
    tol = reg.rlayer_units_per_pixel * 1e-3
    flags = np.zeros((1, reg.img_size_y_pixels, reg.img_size_x_pixels), np.uint8)
    size = reg_params.tile_size_px
    for yb in range(reg.y_bins_number):
        for xb in range(reg.x_bins_number):
            tile = TileParams(x_bin_number=xb, y_bin_number=yb, x_bins_number=reg.x_bins_number,
                              y_bins_number=reg.y_bins_number, params=reg_params,
                              processing_extent=reg.extended_extent,
                              rlayer_units_per_pixel=reg.rlayer_units_per_pixel)
            e = tile.extent
            outside = (e.xMinimum() < extent.xMinimum() - tol
                       or e.xMaximum() > extent.xMaximum() + tol
                       or e.yMinimum() < extent.yMinimum() - tol
                       or e.yMaximum() > extent.yMaximum() + tol)
            tile.set_mask_on_full_img(full_result_img=flags,
                                      tile_result=np.full((1, size, size), int(outside), np.uint8))
    padded = reg.limit_extended_extent_image_to_base_extent_with_mask(flags)[0].astype(bool)

    # Where Deepness's result (its "base extent", rounded to the layer grid) sits in the raster.
    base, units = reg.base_extent, reg.rlayer_units_per_pixel
    offset = [round((extent.yMaximum() - base.yMaximum()) / units),
              round((base.xMinimum() - extent.xMinimum()) / units)]
    np.savez(out_npz, classes=classes, height=height, padded=padded)
    print(json.dumps({
        "height_dtype": str(height_img.dtype),
        "tile_size": size,
        "overlap_percent": reg_model.get_metadata_tiles_overlap(),
        "resolution_cm": reg_params.resolution_cm_per_px,
        "small_segment": seg_params.postprocessing_dilate_erode_size,
        "seg_threshold": threshold,
        "output_scaling": reg_params.output_scaling,
        "extended_px": [reg.img_size_y_pixels, reg.img_size_x_pixels],
        "tiles": reg.x_bins_number * reg.y_bins_number,
        "offset_px": offset,
        "raster_px": [layer.height(), layer.width()],
    }))
    sys.stdout.flush()
    os._exit(0)  # skip exitQgis(): it can crash on teardown in offscreen mode


if __name__ == "__main__":
    main()
