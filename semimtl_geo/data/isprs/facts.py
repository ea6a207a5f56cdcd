"""ISPRS 2D semantic labelling benchmark: Potsdam and Vaihingen facts in one place.

Source: ISPRS Test Project on Urban Classification and 3D Building Reconstruction
(https://www.isprs.org/education/benchmarks/UrbanSemLab/), as laid out by the public
downloads and the loaders of torchgeo/mmsegmentation.

Potsdam
    38 tiles of 6000x6000 px at 5 cm, GeoTIFF orthos in EPSG:32633 (UTM 33N); tile ids
    ``{r}_{c}`` such as ``2_10``. Archives (optionally wrapped in one ``Potsdam.zip``):
    ``2_Ortho_RGB.zip``, ``3_Ortho_IRRG.zip``, ``4_Ortho_RGBIR.zip`` (4-band uint8 whose
    band 4 is flagged as alpha), ``1_DSM_normalisation.zip`` (8-bit JPEG nDSMs named with
    zero-padded ids, not georeferenced; tile 03_13 is one row short), ``5_Labels_all.zip`` and
    ``5_Labels_all_noBoundary.zip`` (RGB colour labels, not georeferenced).

Vaihingen
    33 areas at 9 cm, IR-R-G false colour. ``ISPRS_semantic_labeling_Vaihingen.zip`` holds
    ``top/top_mosaic_09cm_area{N}.tif`` and ``dsm/dsm_09cm_matching_area{N}.tif``; ground
    truth ``ISPRS_semantic_labeling_Vaihingen_ground_truth_COMPLETE.zip`` (flat
    ``top_mosaic_09cm_area{N}.tif``) and ``..._ground_truth_eroded_COMPLETE.zip``
    (``top_mosaic_09cm_area{N}_noBoundary.tif``); Gerke's nDSM
    ``ndsm/ndsm_09cm_matching_area{N}.bmp``. Tops may carry no georeferencing.

Classes (both): 0 impervious surfaces (255,255,255), 1 building (0,0,255), 2 low vegetation
(0,255,255), 3 tree (0,255,0), 4 car (255,255,0), 5 clutter (255,0,0); black (0,0,0) marks
the eroded boundary in the ``noBoundary`` labels and becomes the ignore index 255.
"""

from __future__ import annotations

from dataclasses import dataclass

from semimtl_geo.classes import IGNORE_INDEX, ISPRS_BOUNDARY_COLOR, ISPRS_CLASSES
from semimtl_geo.grid import grid_stride

DATASETS = ("potsdam", "vaihingen")

# --- official splits -------------------------------------------------------------------

POTSDAM_TRAIN = (
    "2_10", "2_11", "2_12", "3_10", "3_11", "3_12", "4_10", "4_11", "4_12", "5_10", "5_11",
    "5_12", "6_7", "6_8", "6_9", "6_10", "6_11", "6_12", "7_7", "7_8", "7_9", "7_10", "7_11",
    "7_12",
)
POTSDAM_TEST = (
    "2_13", "2_14", "3_13", "3_14", "4_13", "4_14", "4_15", "5_13", "5_14", "5_15", "6_13",
    "6_14", "6_15", "7_13",
)
VAIHINGEN_TRAIN = tuple(
    str(n) for n in (1, 3, 5, 7, 11, 13, 15, 17, 21, 23, 26, 28, 30, 32, 34, 37)
)
VAIHINGEN_TEST = tuple(
    str(n) for n in (2, 4, 6, 8, 10, 12, 14, 16, 20, 22, 24, 27, 29, 31, 33, 35, 38)
)

SPLITS: dict[str, dict[str, tuple[str, ...]]] = {
    "potsdam": {"train": POTSDAM_TRAIN, "test": POTSDAM_TEST},
    "vaihingen": {"train": VAIHINGEN_TRAIN, "test": VAIHINGEN_TEST},
}

#: Native ground sampling distance (metres per pixel) of the sources.
NATIVE_GSD = {"potsdam": 0.05, "vaihingen": 0.09}

#: Potsdam's CRS; Vaihingen tops without georeferencing get :data:`VAIHINGEN_LOCAL_CRS`.
POTSDAM_CRS = "EPSG:32633"

#: Placeholder CRS of the documented local grid given to Vaihingen areas that carry no
#: georeferencing (UTM 32N, the zone Vaihingen/Enz lies in). The positions are NOT the
#: true ones: area N's top-left corner is put at
#: ``(VAIHINGEN_LOCAL_ORIGIN[0] + N * VAIHINGEN_LOCAL_SPACING, VAIHINGEN_LOCAL_ORIGIN[1])``
#: so that areas never overlap (each is < 300 m wide) and torchgeo can index them.
VAIHINGEN_LOCAL_CRS = "EPSG:32632"
VAIHINGEN_LOCAL_ORIGIN = (500_000.0, 5_420_000.0)
VAIHINGEN_LOCAL_SPACING = 1_000.0

# --- bands ------------------------------------------------------------------------------

#: Potsdam band compositions: name -> band names (the order written to the prepared image).
POTSDAM_BAND_SETS: dict[str, tuple[str, ...]] = {
    "IRRG": ("IR", "R", "G"),
    "RGB": ("R", "G", "B"),
    "RGBIR": ("R", "G", "B", "IR"),
}
#: Vaihingen tops are IR-R-G false colour.
VAIHINGEN_BANDS = ("IR", "R", "G")

#: Potsdam ortho products: composition -> (zip name, file pattern, band names in the file).
POTSDAM_ORTHOS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "IRRG": ("3_Ortho_IRRG.zip", "top_potsdam_{tile}_IRRG.tif", ("IR", "R", "G")),
    "RGB": ("2_Ortho_RGB.zip", "top_potsdam_{tile}_RGB.tif", ("R", "G", "B")),
    "RGBIR": ("4_Ortho_RGBIR.zip", "top_potsdam_{tile}_RGBIR.tif", ("R", "G", "B", "IR")),
}

# --- file names -------------------------------------------------------------------------

POTSDAM_OUTER_ZIP = "Potsdam.zip"
POTSDAM_NDSM_ZIP = "1_DSM_normalisation.zip"
POTSDAM_NDSM_PATTERNS = {
    "lastools": "dsm_potsdam_{rr}_{cc}_normalized_lastools.jpg",
    "ownapproach": "dsm_potsdam_{rr}_{cc}_normalized_ownapproach.jpg",
}
POTSDAM_LABEL_ZIPS = {"all": "5_Labels_all.zip", "noBoundary": "5_Labels_all_noBoundary.zip"}
POTSDAM_LABEL_PATTERNS = {
    "all": "top_potsdam_{tile}_label.tif",
    "noBoundary": "top_potsdam_{tile}_label_noBoundary.tif",
}

VAIHINGEN_OUTER_ZIP = "Vaihingen.zip"
VAIHINGEN_ZIP = "ISPRS_semantic_labeling_Vaihingen.zip"
VAIHINGEN_TOP_PATTERN = "top_mosaic_09cm_area{tile}.tif"  # inside a ``top/`` folder
VAIHINGEN_DSM_PATTERN = "dsm_09cm_matching_area{tile}.tif"  # inside ``dsm/``
VAIHINGEN_NDSM_PATTERN = "ndsm_09cm_matching_area{tile}.bmp"  # inside ``ndsm/``
VAIHINGEN_LABEL_ZIPS = {
    "all": "ISPRS_semantic_labeling_Vaihingen_ground_truth_COMPLETE.zip",
    "noBoundary": "ISPRS_semantic_labeling_Vaihingen_ground_truth_eroded_COMPLETE.zip",
}
VAIHINGEN_LABEL_PATTERNS = {
    "all": "top_mosaic_09cm_area{tile}.tif",  # same base name as the top, flat in its zip
    "noBoundary": "top_mosaic_09cm_area{tile}_noBoundary.tif",
}

#: Default metres per nDSM unit (normalised value 1.0 = 8-bit grey level 255).
#: The ISPRS nDSMs are 8-bit grey images without a documented vertical scale; we assume the
#: full grey range spans 0-30 m (0.118 m per level), which covers the buildings of both
#: cities. Override with ``prepare-isprs --potsdam-height-scale/--vaihingen-height-scale``.
DEFAULT_HEIGHT_SCALE = 30.0

CLASSES = ISPRS_CLASSES
BOUNDARY_COLOR = ISPRS_BOUNDARY_COLOR
IGNORE = IGNORE_INDEX


def padded_tile(tile: str) -> tuple[str, str]:
    """Zero-padded ``(rr, cc)`` of a Potsdam tile id, as used by the nDSM file names."""
    r, c = tile.split("_")
    return f"{int(r):02d}", f"{int(c):02d}"


def split_of(dataset: str, tile: str) -> str | None:
    """Official split (``"train"``/``"test"``) of a tile id, or None if it has none."""
    for split, ids in SPLITS[dataset].items():
        if tile in ids:
            return split
    return None


def all_tiles(dataset: str) -> tuple[str, ...]:
    """All official tile ids of a dataset, train first."""
    return SPLITS[dataset]["train"] + SPLITS[dataset]["test"]


def tile_name(dataset: str, tile: str) -> str:
    """Return the prepared files' base name (``potsdam_2_10``, ``vaihingen_area1``)."""
    return f"potsdam_{tile}" if dataset == "potsdam" else f"vaihingen_area{tile}"


@dataclass(frozen=True)
class GridSpec:
    """Patch size and overlap of the evaluation grid (the paper's 512 px, 50 %)."""

    patch_size: int = 512
    overlap: float = 0.5

    @property
    def stride(self) -> int:
        """Step between patch origins in pixels (:func:`semimtl_geo.grid.grid_stride`)."""
        return grid_stride(self.patch_size, self.overlap)

__all__ = [
    "POTSDAM_BAND_SETS",
    "POTSDAM_ORTHOS",
    "SPLITS",
    "BOUNDARY_COLOR",
    "CLASSES",
    "DATASETS",
    "DEFAULT_HEIGHT_SCALE",
    "GridSpec",
    "IGNORE",
    "NATIVE_GSD",
    "POTSDAM_CRS",
    "POTSDAM_LABEL_PATTERNS",
    "POTSDAM_LABEL_ZIPS",
    "POTSDAM_NDSM_PATTERNS",
    "POTSDAM_NDSM_ZIP",
    "POTSDAM_OUTER_ZIP",
    "POTSDAM_TEST",
    "POTSDAM_TRAIN",
    "VAIHINGEN_BANDS",
    "VAIHINGEN_DSM_PATTERN",
    "VAIHINGEN_LABEL_PATTERNS",
    "VAIHINGEN_LABEL_ZIPS",
    "VAIHINGEN_LOCAL_CRS",
    "VAIHINGEN_LOCAL_ORIGIN",
    "VAIHINGEN_LOCAL_SPACING",
    "VAIHINGEN_NDSM_PATTERN",
    "VAIHINGEN_OUTER_ZIP",
    "VAIHINGEN_TEST",
    "VAIHINGEN_TOP_PATTERN",
    "VAIHINGEN_TRAIN",
    "VAIHINGEN_ZIP",
    "all_tiles",
    "padded_tile",
    "split_of",
    "tile_name",
]
