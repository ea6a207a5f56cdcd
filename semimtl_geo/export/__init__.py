"""Model export for other runtimes: ONNX files for QGIS's Deepness plugin."""

from semimtl_geo.export.deepness import deepness_metadata
from semimtl_geo.export.onnx_export import ExportedTask, export_onnx, output_paths

__all__ = ["ExportedTask", "deepness_metadata", "export_onnx", "output_paths"]
