"""Class tables and colour mapping against hand-written tables (not the code's own tables).

The ISPRS colours are those of the ISPRS 2D Semantic Labeling Contest documentation; the
Cityscapes colours are cityscapesScripts' ``labels.py`` (train ids 0..18). Every
expectation below is written out by hand, so a swapped or mistyped colour in
``semimtl_geo.classes`` fails here instead of being copied into the expectation.
"""

from xml.etree import ElementTree as ET

import numpy as np
import pytest

from semimtl_geo.classes import (
    CITYSCAPES_CLASSES,
    IGNORE_INDEX,
    ISPRS_BOUNDARY_COLOR,
    ISPRS_CLASSES,
    ClassTable,
)
from semimtl_geo.data.isprs.prepare import colors_to_classes
from semimtl_geo.inference.qml import class_qml_text

#: ISPRS label colour -> class id, as documented (boundary black -> ignore 255).
ISPRS_RGB_TO_ID = {
    (255, 255, 255): 0,  # impervious surfaces
    (0, 0, 255): 1,  # building
    (0, 255, 255): 2,  # low vegetation
    (0, 255, 0): 3,  # tree
    (255, 255, 0): 4,  # car
    (255, 0, 0): 5,  # clutter / background
    (0, 0, 0): 255,  # eroded boundary of the "noBoundary" labels: ignored
}
ISPRS_NAMES = ["impervious_surfaces", "building", "low_vegetation", "tree", "car", "clutter"]

CITYSCAPES = [
    ("road", (128, 64, 128)),
    ("sidewalk", (244, 35, 232)),
    ("building", (70, 70, 70)),
    ("wall", (102, 102, 156)),
    ("fence", (190, 153, 153)),
    ("pole", (153, 153, 153)),
    ("traffic_light", (250, 170, 30)),
    ("traffic_sign", (220, 220, 0)),
    ("vegetation", (107, 142, 35)),
    ("terrain", (152, 251, 152)),
    ("sky", (70, 130, 180)),
    ("person", (220, 20, 60)),
    ("rider", (255, 0, 0)),
    ("car", (0, 0, 142)),
    ("truck", (0, 0, 70)),
    ("bus", (0, 60, 100)),
    ("train", (0, 80, 100)),
    ("motorcycle", (0, 0, 230)),
    ("bicycle", (119, 11, 32)),
]


def _rgb_image(colors: list[tuple[int, int, int]]) -> np.ndarray:
    """3 x 2 x N label image: each colour twice (two rows)."""
    row = np.array(colors, np.uint8).T[:, None, :]
    return np.concatenate([row, row], axis=1)


def test_isprs_table_is_the_documented_one():
    assert list(ISPRS_CLASSES.names) == ISPRS_NAMES
    by_id = {v: k for k, v in ISPRS_RGB_TO_ID.items() if v != 255}
    assert [tuple(c) for c in ISPRS_CLASSES.colors] == [by_id[i] for i in range(6)]
    assert tuple(ISPRS_BOUNDARY_COLOR) == (0, 0, 0) and IGNORE_INDEX == 255


def test_cityscapes_table_is_cityscapes_scripts_train_ids():
    assert list(CITYSCAPES_CLASSES.names) == [n for n, _ in CITYSCAPES]
    assert [tuple(c) for c in CITYSCAPES_CLASSES.colors] == [c for _, c in CITYSCAPES]


def test_isprs_colors_to_ids_hand_written_table():
    colors = list(ISPRS_RGB_TO_ID)
    ids, unknown = colors_to_classes(_rgb_image(colors))
    assert ids.dtype == np.uint8 and ids.shape == (2, len(colors))
    np.testing.assert_array_equal(ids[0], [ISPRS_RGB_TO_ID[c] for c in colors])
    np.testing.assert_array_equal(ids[1], ids[0])
    assert unknown == {}  # boundary black is expected, not an unknown colour


def test_isprs_near_miss_colors_are_unknown_and_counted():
    # one channel off each class colour, plus an unrelated colour
    near = [(254, 255, 255), (0, 1, 255), (0, 255, 254), (1, 255, 0), (255, 254, 0),
            (255, 0, 1), (0, 0, 1), (12, 34, 56)]
    rgb = _rgb_image(near + [(0, 255, 0)])
    ids, unknown = colors_to_classes(rgb)
    assert (ids[:, :-1] == 255).all() and (ids[:, -1] == 3).all()
    assert unknown == {f"{r},{g},{b}": 2 for r, g, b in near}


def test_prepared_label_color_table():
    cmap = ISPRS_CLASSES.colormap()
    expected = {i: (*c, 255) for c, i in ISPRS_RGB_TO_ID.items() if i != 255}
    expected[255] = (0, 0, 0, 0)  # ignore: transparent
    assert cmap == expected


def test_colorize_hand_written_table():
    ids = np.array([[0, 1, 2, 3], [4, 5, 255, 3]], np.uint8)
    rgb = ISPRS_CLASSES.colorize(ids)
    id_to_rgb = {v: k for k, v in ISPRS_RGB_TO_ID.items()}
    expected = np.array([[id_to_rgb[int(v)] for v in row] for row in ids], np.uint8)
    np.testing.assert_array_equal(rgb, expected)
    assert rgb.dtype == np.uint8
    # ids a table cannot have (a corrupt or int16 raster) are drawn black like ignore
    odd = ISPRS_CLASSES.colorize(np.array([[-1, 256, 300, 6]]))
    assert odd.tolist() == [[[0, 0, 0]] * 4]
    city = CITYSCAPES_CLASSES.colorize(np.array([[0, 18, 13]]))
    assert city.tolist() == [[[128, 64, 128], [119, 11, 32], [0, 0, 142]]]


def test_class_style_palette_hand_written_table():
    root = ET.fromstring(class_qml_text(ISPRS_CLASSES).split("\n", 1)[1])
    entries = root.findall(".//paletteEntry")
    got = {int(e.get("value")): (e.get("color"), e.get("label")) for e in entries}
    assert got == {
        0: ("#ffffff", "impervious_surfaces"),
        1: ("#0000ff", "building"),
        2: ("#00ffff", "low_vegetation"),
        3: ("#00ff00", "tree"),
        4: ("#ffff00", "car"),
        5: ("#ff0000", "clutter"),
    }
    ignore = root.find(".//pixelListEntry")
    assert ignore.get("min") == ignore.get("max") == "255"
    assert ignore.get("percentTransparent") == "100"
    city = ET.fromstring(class_qml_text(CITYSCAPES_CLASSES).split("\n", 1)[1])
    assert city.findall(".//paletteEntry")[1].get("color") == "#f423e8"  # sidewalk


def test_class_table_round_trip_and_checks():
    table = ClassTable(("a", "b"), ((1, 2, 3), (4, 5, 6)))
    assert len(table) == 2
    data = table.to_dict()
    assert data == {"names": ["a", "b"], "colors": [[1, 2, 3], [4, 5, 6]]}
    back = ClassTable.from_dict({"names": ["a", "b"], "colors": [["1", 2.0, 3], [4, 5, 6]]})
    assert back == table and back.colors[0] == (1, 2, 3)
    with pytest.raises(ValueError, match=r"^ClassTable needs one colour per class name\.$"):
        ClassTable(("a", "b"), ((1, 2, 3),))


def test_identifiers_spell_color_one_way():
    """Names in code say ``color`` (as numpy, matplotlib, GDAL and QGIS do); prose may not."""
    import io
    import tokenize
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    offenders = []
    for folder in ("semimtl_geo", "cli", "tests", "examples", "benchmarks", "scripts"):
        for path in sorted((repo / folder).rglob("*.py")):
            tokens = tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
            offenders += [f"{path.relative_to(repo)}:{t.start[0]} {t.string}" for t in tokens
                          if t.type == tokenize.NAME and "colour" in t.string.lower()]
    assert offenders == []
