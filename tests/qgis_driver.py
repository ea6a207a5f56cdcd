"""PyQGIS helper run by tests/test_qgis_plugin.py with QGIS's own Python (/usr/bin/python3).

Not a test module (pytest does not collect it): QGIS's Python has no pytest, torch or
semimtl_geo. It loads the installed plugin the way QGIS does, runs one command and prints
one JSON line on stdout.

Commands:
    style LAYER               renderer type and colours QGIS applies to a predicted raster
                              (.tif) or to the class polygons (.gpkg)
    load PLUGINS_DIR RASTER CKPT  run Predict and load the results into the project
    cancel PLUGINS_DIR CLI RASTER run Predict with a fake slow CLI and cancel it mid-way
"""

import json
import os
import sys
import tempfile
import time

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from qgis.core import (  # noqa: E402
    QgsApplication,
    QgsProcessingFeedback,
    QgsRasterLayer,
    QgsVectorLayer,
)


def style(path: str) -> dict:
    if path.endswith(".gpkg"):
        layer = QgsVectorLayer(path, "layer", "ogr")
        renderer = layer.renderer()
        out = {"valid": layer.isValid(), "type": renderer.type(), "crs": layer.crs().authid()}
        if renderer.type() == "categorizedSymbol":
            out["field"] = renderer.classAttribute()
            out["classes"] = [
                {"value": c.value(), "label": c.label(), "color": c.symbol().color().name()}
                for c in renderer.categories()
            ]
        return out
    layer = QgsRasterLayer(path, "layer", "gdal")
    renderer = layer.renderer()
    out = {"valid": layer.isValid(), "type": renderer.type(), "crs": layer.crs().authid()}
    if renderer.type() == "paletted":
        out["classes"] = [
            {"value": c.value, "label": c.label, "color": c.color.name()}
            for c in renderer.classes()
        ]
    elif renderer.type() == "singlebandpseudocolor":
        shader = renderer.shader().rasterShaderFunction()
        out["ramp"] = [item.color.name() for item in shader.colorRampItemList()]
    return out


class CancelAfterProgress(QgsProcessingFeedback):
    """Cancels as soon as the algorithm reports progress above zero."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[float] = []
        self.progressChanged.connect(self._on_progress)

    def _on_progress(self, value: float) -> None:
        self.seen.append(value)
        if value > 0:
            self.cancel()


def load_plugin(plugins_dir: str):
    """Start Processing and the plugin the way QGIS does at start-up."""
    sys.path.insert(0, "/usr/share/qgis/python/plugins")
    sys.path.insert(0, plugins_dir)
    from processing.core.Processing import Processing

    Processing.initialize()
    import semimtl_geo_qgis

    plugin = semimtl_geo_qgis.classFactory(None)
    plugin.initProcessing()
    return plugin


def load(plugins_dir: str, raster: str, checkpoint: str) -> dict:
    """Run Predict as the toolbox dialog does and report the layers added to the project."""
    from qgis.core import QgsProject

    plugin = load_plugin(plugins_dir)  # noqa: F841 - keeps the provider alive
    import processing

    out_dir = tempfile.mkdtemp()
    processing.runAndLoadResults("semimtl-geo:predict", {
        "INPUT": raster, "CHECKPOINT": checkpoint, "DEVICE": "cpu", "VECTORIZE": True,
        "OUTPUT_CLASS": os.path.join(out_dir, "cls.tif"),
        "OUTPUT_HEIGHT": os.path.join(out_dir, "h.tif"),
    })
    return {
        layer.name(): layer.renderer().type()
        for layer in QgsProject.instance().mapLayers().values()
    }


def cancel(plugins_dir: str, cli: str, raster: str) -> dict:
    plugin = load_plugin(plugins_dir)  # noqa: F841 - keeps the provider alive
    import processing

    out_dir = tempfile.mkdtemp()
    feedback = CancelAfterProgress()
    params = {
        "INPUT": raster, "CHECKPOINT": raster, "EXECUTABLE": cli,
        "OUTPUT_CLASS": os.path.join(out_dir, "cls.tif"),
        "OUTPUT_HEIGHT": os.path.join(out_dir, "h.tif"),
    }
    start = time.monotonic()
    error = None
    try:
        processing.run("semimtl-geo:predict", params, feedback=feedback)
    except Exception as exc:  # QgsProcessingException
        error = str(exc)
    return {
        "seconds": time.monotonic() - start, "error": error, "progress": feedback.seen,
        "left": sorted(os.listdir(out_dir)),
    }


def main() -> None:
    app = QgsApplication([], False)
    app.initQgis()
    command = sys.argv[1]
    if command == "style":
        result = style(sys.argv[2])
    elif command == "load":
        result = load(*sys.argv[2:5])
    elif command == "cancel":
        result = cancel(*sys.argv[2:5])
    else:
        raise SystemExit(f"unknown command {command}")
    print(json.dumps(result))
    sys.stdout.flush()
    os._exit(0)  # skip exitQgis(): it can crash on teardown in offscreen mode


if __name__ == "__main__":
    main()
