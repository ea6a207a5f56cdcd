"""Sliding-window inference and georeferenced writers (GeoTIFF/COG, QML, vectors).

Public API:

* :func:`predict_array` — blended sliding-window prediction of an in-memory image
  (used by evaluation);
* :func:`predict_raster` — stream a GDAL raster to COG GeoTIFFs on its own grid
  (used by ``semimtl-geo predict``);
* :func:`write_class_qml` / :func:`write_height_qml` (and the ``*_qml_text`` string
  forms) — QGIS 3 style sidecars;
* :func:`vectorize_classes` — GeoPackage polygons per class with area and heights.
"""

from semimtl_geo.inference.arrays import predict_array
from semimtl_geo.inference.blending import hann_2d
from semimtl_geo.inference.predictor import WindowPredictor
from semimtl_geo.inference.qml import (
    class_qml_text,
    height_qml_text,
    write_class_qml,
    write_height_qml,
)
from semimtl_geo.inference.raster import RasterOutputs, predict_raster
from semimtl_geo.inference.vectorize import vectorize_classes
from semimtl_geo.inference.windows import WindowGrid, make_grid

__all__ = [
    "RasterOutputs",
    "WindowGrid",
    "WindowPredictor",
    "class_qml_text",
    "hann_2d",
    "height_qml_text",
    "make_grid",
    "predict_array",
    "predict_raster",
    "vectorize_classes",
    "write_class_qml",
    "write_height_qml",
]
