"""QGIS 3 layer style sidecars (``.qml``) for the predicted rasters.

QGIS loads ``<name>.qml`` automatically when ``<name>.tif`` is added to a project, so the
class raster shows with its palette and class names, the height raster with a
pseudocolour ramp and the confidence raster with a red-yellow-green ramp over 0-100 %,
with no manual styling. The XML follows what QGIS 3 writes for
"Paletted/Unique values" and "Singleband pseudocolor" renderers (``<qgis><pipe>
<rasterrenderer type=...>``). These functions are public: the QGIS plugin writes the
same styles.
"""

from pathlib import Path
from xml.etree import ElementTree as ET

from semimtl_geo.atomic import atomic_write_text
from semimtl_geo.classes import IGNORE_INDEX, ClassTable

QGIS_VERSION = "3.22.0"


def _hex(rgb: tuple[int, int, int] | list[int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*(int(v) for v in rgb[:3]))


def _root() -> ET.Element:
    return ET.Element("qgis", {
        "version": QGIS_VERSION,
        "styleCategories": "AllStyleCategories",
        "hasScaleBasedVisibilityFlag": "0",
        "minScale": "1e+08",
        "maxScale": "0",
    })


def _pipe_tail(pipe: ET.Element, nearest: bool) -> None:
    ET.SubElement(pipe, "brightnesscontrast", {"brightness": "0", "contrast": "0", "gamma": "1"})
    ET.SubElement(pipe, "huesaturation", {
        "saturation": "0", "colorizeOn": "0", "colorizeRed": "255", "colorizeGreen": "128",
        "colorizeBlue": "128", "colorizeStrength": "100", "grayscaleMode": "0",
        "invertColors": "0",
    })
    method = "nearestNeighbour" if nearest else "bilinear"
    ET.SubElement(pipe, "rasterresampler", {
        "maxOversampling": "2", "zoomedInResampler": method, "zoomedOutResampler": method,
    } if not nearest else {"maxOversampling": "2"})


def _min_max_origin(parent: ET.Element) -> None:
    origin = ET.SubElement(parent, "minMaxOrigin")
    for tag, text in (("limits", "None"), ("extent", "WholeRaster"),
                      ("statAccuracy", "Estimated"), ("cumulativeCutLower", "0.02"),
                      ("cumulativeCutUpper", "0.98"), ("stdDevFactor", "2")):
        ET.SubElement(origin, tag).text = text


def _serialise(root: ET.Element) -> str:
    ET.indent(root)
    body = ET.tostring(root, encoding="unicode")
    return "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n" + body + "\n"


def class_qml_text(classes: ClassTable, nodata: int = IGNORE_INDEX) -> str:
    """QML of a paletted renderer: one entry per class id with its colour and name.

    Args:
        classes: class names and colours (index = pixel value).
        nodata: pixel value shown transparent (not listed in the palette).

    """
    root = _root()
    pipe = ET.SubElement(root, "pipe")
    renderer = ET.SubElement(pipe, "rasterrenderer", {
        "type": "paletted", "band": "1", "opacity": "1", "alphaBand": "-1",
        "nodataColor": "",
    })
    transparency = ET.SubElement(renderer, "rasterTransparency")
    single = ET.SubElement(transparency, "singleValuePixelList")
    ET.SubElement(single, "pixelListEntry", {
        "min": str(nodata), "max": str(nodata), "percentTransparent": "100",
    })
    _min_max_origin(renderer)
    palette = ET.SubElement(renderer, "colorPalette")
    for value, (name, color) in enumerate(zip(classes.names, classes.colors)):
        ET.SubElement(palette, "paletteEntry", {
            "value": str(value), "color": _hex(color), "alpha": "255", "label": name,
        })
    _pipe_tail(pipe, nearest=True)
    ET.SubElement(root, "blendMode").text = "0"
    return _serialise(root)


#: ``_ramp("viridis", 9)`` as matplotlib computes it (a test keeps them equal): the
#: default height ramp without importing matplotlib, which took 0.9 s of CPU per
#: ``predict`` run without a preview (measured).
VIRIDIS_9 = ("#440154", "#472d7b", "#3b528b", "#2c728e", "#21918c", "#28ae80", "#5ec962",
             "#addc30", "#fde725")


def _ramp(cmap: str, stops: int) -> list[tuple[float, str]]:
    if (cmap, stops) == ("viridis", len(VIRIDIS_9)):
        return [(i / (stops - 1), color) for i, color in enumerate(VIRIDIS_9)]
    from matplotlib import colormaps

    ramp = colormaps[cmap]
    return [(i / (stops - 1), _hex([round(255 * c) for c in ramp(i / (stops - 1))[:3]]))
            for i in range(stops)]


def height_qml_text(
    vmin: float, vmax: float, unit: str = "m", cmap: str = "viridis", stops: int = 9
) -> str:
    """QML of a single-band pseudocolour renderer for heights.

    Args:
        vmin: value at the bottom of the ramp (e.g. 2nd percentile of predicted heights).
        vmax: value at the top of the ramp.
        unit: height unit written in the item labels.
        cmap: matplotlib colormap sampled for the ramp colours.
        stops: number of colour stops.

    """
    if not vmax > vmin:
        vmax = vmin + 1.0
    root = _root()
    pipe = ET.SubElement(root, "pipe")
    renderer = ET.SubElement(pipe, "rasterrenderer", {
        "type": "singlebandpseudocolor", "band": "1", "opacity": "1", "alphaBand": "-1",
        "classificationMin": f"{vmin:.6g}", "classificationMax": f"{vmax:.6g}",
        "nodataColor": "",
    })
    ET.SubElement(renderer, "rasterTransparency")
    _min_max_origin(renderer)
    shader = ET.SubElement(renderer, "rastershader")
    crs = ET.SubElement(shader, "colorrampshader", {
        "colorRampType": "INTERPOLATED", "classificationMode": "1", "clip": "0",
        "minimumValue": f"{vmin:.6g}", "maximumValue": f"{vmax:.6g}", "labelPrecision": "2",
    })
    ramp = _ramp(cmap, stops)
    colorramp = ET.SubElement(crs, "colorramp", {"type": "gradient", "name": "[source]"})
    options = ET.SubElement(colorramp, "Option", {"type": "Map"})
    stops_text = ":".join(f"{pos:.4f};{_qgis_rgba(col)}" for pos, col in ramp[1:-1])
    for key, value in (("color1", _qgis_rgba(ramp[0][1])), ("color2", _qgis_rgba(ramp[-1][1])),
                       ("discrete", "0"), ("rampType", "gradient"), ("stops", stops_text)):
        ET.SubElement(options, "Option", {"type": "QString", "name": key, "value": value})
    for pos, col in ramp:
        value = vmin + pos * (vmax - vmin)
        ET.SubElement(crs, "item", {
            "value": f"{value:.6g}", "color": col, "alpha": "255",
            "label": f"{value:.2f} {unit}",
        })
    _pipe_tail(pipe, nearest=False)
    ET.SubElement(root, "blendMode").text = "0"
    return _serialise(root)


def _qgis_rgba(hex_color: str) -> str:
    r, g, b = (int(hex_color[i:i + 2], 16) for i in (1, 3, 5))
    return f"{r},{g},{b},255"


def write_class_qml(path: str | Path, classes: ClassTable, nodata: int = IGNORE_INDEX) -> Path:
    """Write :func:`class_qml_text` to ``path`` atomically (e.g. ``tile_class.qml``)."""
    return atomic_write_text(path, class_qml_text(classes, nodata), suffix=".partial")


def write_height_qml(
    path: str | Path, vmin: float, vmax: float, unit: str = "m", cmap: str = "viridis"
) -> Path:
    """Write :func:`height_qml_text` to ``path`` atomically (e.g. ``tile_height.qml``)."""
    return atomic_write_text(path, height_qml_text(vmin, vmax, unit, cmap), suffix=".partial")


def confidence_qml_text() -> str:
    """QML of the confidence raster: red (0 %) to yellow to green (100 %)."""
    return height_qml_text(0.0, 100.0, unit="%", cmap="RdYlGn", stops=11)


def write_confidence_qml(path: str | Path) -> Path:
    """Write :func:`confidence_qml_text` to ``path`` atomically (``tile_confidence.qml``)."""
    return atomic_write_text(path, confidence_qml_text(), suffix=".partial")
