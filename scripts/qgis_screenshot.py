r"""Render semimtl-geo predict outputs with QGIS, headless, into one PNG for the docs.

Run with QGIS's own Python (Debian: ``/usr/bin/python3`` with ``python3-qgis``)::

    QT_QPA_PLATFORM=offscreen /usr/bin/python3 scripts/qgis_screenshot.py \
        --image tile.tif --classes out/tile_class.tif --height out/tile_height.tif \
        -o docs/qgis_outputs.png

Each raster is loaded the way QGIS loads it (the class and height rasters pick up their
``.qml`` sidecars written by ``semimtl-geo predict``) and drawn by QGIS's map renderer
(``QgsMapRendererParallelJob``); panels, titles and legends are then put side by side
with QPainter. The legend entries are read from the layers' renderers, so the picture
shows what QGIS applied, not what we meant to apply.
"""

import argparse
import os
import sys

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from qgis.core import (  # noqa: E402
    Qgis,
    QgsApplication,
    QgsMapRendererParallelJob,
    QgsMapSettings,
    QgsRasterLayer,
)
from qgis.PyQt.QtCore import QRectF, QSize, Qt  # noqa: E402
from qgis.PyQt.QtGui import QColor, QFont, QImage, QLinearGradient, QPainter  # noqa: E402

PANEL = 460
TITLE_H = 34
LEGEND_H = 150
MARGIN = 14


def render(layer: QgsRasterLayer, size: int) -> QImage:
    """Draw one layer with its current renderer into a square image."""
    settings = QgsMapSettings()
    settings.setLayers([layer])
    settings.setDestinationCrs(layer.crs())
    settings.setExtent(layer.extent())
    settings.setOutputSize(QSize(size, size))
    # Grey, so that white classes (ISPRS impervious surfaces) stand out from the page.
    settings.setBackgroundColor(QColor(200, 200, 200))
    job = QgsMapRendererParallelJob(settings)
    job.start()
    job.waitForFinished()
    return job.renderedImage()


def load(path: str, name: str) -> QgsRasterLayer:
    """Open a raster as QGIS does (default style = the ``.qml`` beside it)."""
    layer = QgsRasterLayer(path, name, "gdal")
    if not layer.isValid():
        raise SystemExit(f"QGIS could not open {path}")
    return layer


def draw_class_legend(painter: QPainter, layer: QgsRasterLayer, x: int, y: int) -> None:
    """Colour swatches and names from the layer's paletted renderer, in two columns."""
    classes = layer.renderer().classes() if layer.renderer().type() == "paletted" else []
    painter.setFont(QFont("DejaVu Sans", 11))
    for i, cls in enumerate(classes):
        col, row = divmod(i, 4)
        cx, cy = x + col * (PANEL // 2), y + row * 28
        painter.setPen(QColor(80, 80, 80))
        painter.setBrush(cls.color)
        painter.drawRect(cx, cy, 20, 20)
        painter.setPen(QColor(20, 20, 20))
        painter.drawText(cx + 28, cy + 16, cls.label.replace("_", " "))


def draw_height_legend(painter: QPainter, layer: QgsRasterLayer, x: int, y: int) -> None:
    """Colour ramp and its end values from the layer's pseudocolour renderer."""
    renderer = layer.renderer()
    if renderer.type() != "singlebandpseudocolor":
        return
    items = renderer.shader().rasterShaderFunction().colorRampItemList()
    lo, hi = items[0].value, items[-1].value
    width = PANEL - 40
    gradient = QLinearGradient(x, 0, x + width, 0)
    for item in items:
        gradient.setColorAt((item.value - lo) / ((hi - lo) or 1.0), item.color)
    painter.setPen(QColor(80, 80, 80))
    painter.setBrush(gradient)
    painter.drawRect(x, y, width, 22)
    painter.setPen(QColor(20, 20, 20))
    painter.setFont(QFont("DejaVu Sans", 11))
    painter.drawText(x, y + 42, items[0].label)
    painter.drawText(QRectF(x, y + 28, width, 20), Qt.AlignRight, items[-1].label)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, render the three panels, save the PNG."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", required=True, help="input raster given to predict")
    parser.add_argument("--classes", required=True, help="<stem>_class.tif")
    parser.add_argument("--height", required=True, help="<stem>_height.tif")
    parser.add_argument("--caption", default="", help="line of text under the panels")
    parser.add_argument("-o", "--output", required=True, help="PNG to write")
    args = parser.parse_args(argv)

    app = QgsApplication([], False)
    app.initQgis()
    panels = [
        ("Input (IR-R-G)", load(args.image, "input"), None),
        ("Classes (class QML)", load(args.classes, "classes"), draw_class_legend),
        ("Height (height QML)", load(args.height, "height"), draw_height_legend),
    ]
    caption = args.caption or f"Rendered headless by QGIS {Qgis.version()} (PyQGIS map renderer)."
    width = MARGIN + len(panels) * (PANEL + MARGIN)
    height = MARGIN + TITLE_H + PANEL + LEGEND_H + 30
    canvas = QImage(width, height, QImage.Format_ARGB32)
    canvas.fill(QColor(255, 255, 255))
    painter = QPainter(canvas)
    painter.setRenderHint(QPainter.Antialiasing)
    for i, (title, layer, legend) in enumerate(panels):
        x = MARGIN + i * (PANEL + MARGIN)
        painter.setFont(QFont("DejaVu Sans", 14, QFont.Bold))
        painter.setPen(QColor(20, 20, 20))
        painter.drawText(x, MARGIN + 22, title)
        painter.drawImage(x, MARGIN + TITLE_H, render(layer, PANEL))
        painter.setPen(QColor(60, 60, 60))
        painter.setBrush(Qt.NoBrush)
        painter.drawRect(x, MARGIN + TITLE_H, PANEL - 1, PANEL - 1)
        if legend is not None:
            legend(painter, layer, x + 4, MARGIN + TITLE_H + PANEL + 14)
    painter.setFont(QFont("DejaVu Sans", 10))
    painter.setPen(QColor(90, 90, 90))
    painter.drawText(MARGIN, height - 12, caption)
    painter.end()
    ok = canvas.save(args.output, "PNG")
    print(f"Wrote {args.output}" if ok else f"Could not write {args.output}")
    sys.stdout.flush()
    os._exit(0 if ok else 1)  # skip exitQgis(): it can crash on teardown offscreen


if __name__ == "__main__":
    main()
