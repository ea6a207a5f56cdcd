"""torchgeo datasets over the tiles written by ``semimtl-geo prepare-isprs``.

Three :class:`torchgeo.datasets.RasterDataset` layers per ISPRS dataset, all on the same
grid at the target GSD, so reads are windowed copies, never resampling:

* :class:`PreparedImage` - ``<dataset>/image/*.tif``: uint8 bands (IRRG by default). They
  are written with photometric MINISBLACK so a 4-band RGBIR stack is not read with band 4
  as alpha (torchgeo 0.10 pitfall). Sample key ``image``, float32 pixel values 0-255.
* :class:`PreparedMask` - ``<dataset>/label/*.tif``: class ids 0-5, 255 = ignore. Key
  ``mask``, int64 HxW.
* :class:`PreparedHeight` - ``<dataset>/ndsm/*.tif``: float32 normalised nDSM, NaN =
  nodata. Key ``height``, float32 HxW.

Each has a Potsdam and a Vaihingen subclass (:data:`LAYERS`) that only picks up that
dataset's files. :func:`make_isprs_geodataset` intersects the layers a task list needs
into one dataset whose samples hold ``image``, ``mask`` and ``height`` together, restricted
to the tiles of one split. All layers read with nearest resampling, so class ids and
heights are never blended even if a query were off-grid. Georeferencing meant for writing
results back must come from the float64 tile records (:mod:`semimtl_geo.data.isprs.loaders`),
never from the float32 ``bounds``/``transform`` tensors torchgeo puts in samples.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from rasterio.enums import Resampling
from torchgeo.datasets import IntersectionDataset, RasterDataset

Sample = dict[str, Any]


class _PreparedLayer(RasterDataset):
    """Shared settings of the prepared ISPRS layers (files named ``<dataset>_<tile>.tif``)."""

    filename_glob = "*.tif"
    filename_regex = r"^(?P<name>(potsdam|vaihingen)_[A-Za-z0-9_]+)\.tif$"

    @property
    def resampling(self) -> Resampling:
        """Nearest: prepared layers share one grid, so reads are plain window copies."""
        return Resampling.nearest


class PreparedImage(_PreparedLayer):
    """Prepared image tiles (uint8 bands, read as float32 0-255 under ``image``)."""

    is_image = True


class PreparedMask(_PreparedLayer):
    """Prepared class-id tiles (0-5, 255 = ignore), read as int64 under ``mask``."""

    is_image = False


class PreparedHeight(_PreparedLayer):
    """Prepared normalised nDSM tiles (NaN = nodata), read as float32 under ``height``."""

    is_image = False

    @property
    def dtype(self) -> torch.dtype:
        """Heights are regression targets: keep float32."""
        return torch.float32

    def __init__(self, paths: Iterable[Path] | Path = "data", **kwargs: Any) -> None:
        kwargs.setdefault("transforms", _rename_mask_to_height)
        super().__init__(paths, **kwargs)


class PotsdamImage(PreparedImage):
    """Prepared Potsdam images (IRRG by default, 9 cm, EPSG:32633)."""

    filename_glob = "potsdam_*.tif"


class PotsdamMask(PreparedMask):
    """Prepared Potsdam class ids."""

    filename_glob = "potsdam_*.tif"


class PotsdamHeight(PreparedHeight):
    """Prepared Potsdam normalised nDSM (``1_DSM_normalisation``, lastools)."""

    filename_glob = "potsdam_*.tif"


class VaihingenImage(PreparedImage):
    """Prepared Vaihingen IR-R-G images (9 cm, local grid unless georeferenced)."""

    filename_glob = "vaihingen_*.tif"


class VaihingenMask(PreparedMask):
    """Prepared Vaihingen class ids."""

    filename_glob = "vaihingen_*.tif"


class VaihingenHeight(PreparedHeight):
    """Prepared Vaihingen normalised nDSM (Gerke's ``ndsm_09cm_matching_area{N}.bmp``)."""

    filename_glob = "vaihingen_*.tif"


#: dataset -> (image, mask, height) layer classes.
LAYERS: dict[str, tuple[type[PreparedImage], type[PreparedMask], type[PreparedHeight]]] = {
    "potsdam": (PotsdamImage, PotsdamMask, PotsdamHeight),
    "vaihingen": (VaihingenImage, VaihingenMask, VaihingenHeight),
}


def _rename_mask_to_height(sample: Sample) -> Sample:
    sample["height"] = sample.pop("mask")
    return sample


def merge_layer_samples(samples: Sequence[Sample]) -> Sample:
    """Collate function for the layer intersection: one dict, first ``bounds`` wins.

    torchgeo's default concatenates equal keys, which would stack the nDSM onto the mask.
    """
    out: Sample = {}
    for s in samples:
        for k, v in s.items():
            out.setdefault(k, v)
    return out


def make_isprs_geodataset(
    image_files: Sequence[str | Path],
    mask_files: Sequence[str | Path] | None = None,
    height_files: Sequence[str | Path] | None = None,
    transforms: Callable[[Sample], Sample] | None = None,
    dataset: str | None = None,
) -> RasterDataset | IntersectionDataset:
    """Combine prepared layers into one dataset whose samples hold image, mask and height.

    Args:
        image_files: prepared image GeoTIFFs (the tiles of one split).
        mask_files: matching label GeoTIFFs, or None to leave ``mask`` out.
        height_files: matching nDSM GeoTIFFs, or None to leave ``height`` out.
        transforms: applied to each combined sample.
        dataset: ``potsdam``/``vaihingen`` to use that dataset's layer classes.

    Returns:
        A torchgeo dataset indexed by ``GeoSlice`` queries (see :mod:`.samplers`).

    """
    image_cls, mask_cls, height_cls = (
        LAYERS[dataset] if dataset else (PreparedImage, PreparedMask, PreparedHeight)
    )
    ds: RasterDataset | IntersectionDataset = image_cls([str(p) for p in image_files])
    for files, cls in ((mask_files, mask_cls), (height_files, height_cls)):
        if files:
            ds = IntersectionDataset(ds, cls([str(p) for p in files]),
                                     collate_fn=merge_layer_samples)
    if transforms is not None:
        ds.transforms = transforms
    return ds
