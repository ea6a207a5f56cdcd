"""Class tables shared by the datasets, the writers and the QGIS styles.

ISPRS 2D semantic labelling (Potsdam and Vaihingen) use six classes encoded as RGB
colours in the label rasters; black (0, 0, 0) marks the eroded boundary to ignore.
Source: ISPRS 2D Semantic Labeling Contest documentation.
"""

from dataclasses import dataclass

import numpy as np

IGNORE_INDEX = 255


@dataclass(frozen=True)
class ClassTable:
    """Ordered class names and their RGB colours; the index is the class id."""

    names: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]

    def __post_init__(self) -> None:
        if len(self.names) != len(self.colors):
            raise ValueError("ClassTable needs one colour per class name.")

    def __len__(self) -> int:
        return len(self.names)

    def lut(self) -> np.ndarray:
        """Return the ``256 x 3`` uint8 RGB lookup table: class id -> its colour.

        Ids without a class (the ignore index 255 among them) are black.
        """
        lut = np.zeros((256, 3), dtype=np.uint8)
        lut[: len(self.colors)] = np.asarray(self.colors, dtype=np.uint8).reshape(-1, 3)
        lut[IGNORE_INDEX] = 0
        return lut

    def colorize(self, labels: np.ndarray) -> np.ndarray:
        """Class ids to an RGB image (``... x 3`` uint8); ignore and ids outside 0..255 black."""
        ids = np.asarray(labels).astype(np.int64)
        return self.lut()[np.where((ids >= 0) & (ids <= 255), ids, IGNORE_INDEX)]

    def colormap(self) -> dict[int, tuple[int, int, int, int]]:
        """GeoTIFF colour table (RGBA per class id; the ignore index transparent black)."""
        cmap = {i: (*c, 255) for i, c in enumerate(self.colors)}
        cmap[IGNORE_INDEX] = (0, 0, 0, 0)
        return cmap

    def to_dict(self) -> dict[str, list]:
        """Return a JSON-serialisable form (stored in manifests and checkpoints)."""
        return {"names": list(self.names), "colors": [list(c) for c in self.colors]}

    @classmethod
    def from_dict(cls, data: dict[str, list]) -> "ClassTable":
        """Rebuild a table from :meth:`to_dict` output."""
        return cls(tuple(data["names"]), tuple(tuple(int(v) for v in c) for c in data["colors"]))


ISPRS_CLASSES = ClassTable(
    names=(
        "impervious_surfaces",
        "building",
        "low_vegetation",
        "tree",
        "car",
        "clutter",
    ),
    colors=(
        (255, 255, 255),
        (0, 0, 255),
        (0, 255, 255),
        (0, 255, 0),
        (255, 255, 0),
        (255, 0, 0),
    ),
)

#: Colour of the eroded-boundary pixels in the ISPRS "noBoundary" labels.
ISPRS_BOUNDARY_COLOR = (0, 0, 0)

#: Cityscapes' 19 evaluation classes (train ids 0..18), colours from cityscapesScripts.
CITYSCAPES_CLASSES = ClassTable(
    names=(
        "road",
        "sidewalk",
        "building",
        "wall",
        "fence",
        "pole",
        "traffic_light",
        "traffic_sign",
        "vegetation",
        "terrain",
        "sky",
        "person",
        "rider",
        "car",
        "truck",
        "bus",
        "train",
        "motorcycle",
        "bicycle",
    ),
    colors=(
        (128, 64, 128),
        (244, 35, 232),
        (70, 70, 70),
        (102, 102, 156),
        (190, 153, 153),
        (153, 153, 153),
        (250, 170, 30),
        (220, 220, 0),
        (107, 142, 35),
        (152, 251, 152),
        (70, 130, 180),
        (220, 20, 60),
        (255, 0, 0),
        (0, 0, 142),
        (0, 0, 70),
        (0, 60, 100),
        (0, 80, 100),
        (0, 0, 230),
        (119, 11, 32),
    ),
)
