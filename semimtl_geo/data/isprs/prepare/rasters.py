"""Raster I/O of preparation: reading sources, resampling, writing tiled GeoTIFFs."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning
from rasterio.warp import reproject

from semimtl_geo.data import isprs
from semimtl_geo.data.isprs.archives import SourceFile
from semimtl_geo.data.isprs.prepare.jobs import TileError


def open_source(src: SourceFile, what: str):  # noqa: ANN201 - a rasterio dataset
    """Open a source raster; an unreadable file fails its tile (:class:`TileError`)."""
    try:
        return rasterio.open(src.gdal_path)
    except Exception as exc:  # GDAL reports corrupt/empty files in many ways
        raise TileError(f"{what} file {src.display} could not be read ({exc})") from None


def read_source(src: SourceFile, what: str, indexes: list[int] | None = None):  # noqa: ANN201
    """Read ``indexes`` (all bands if None) unmasked; ``(data, (crs, transform) or None)``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with open_source(src, what) as ds:
            if indexes is not None and max(indexes) > ds.count:
                raise TileError(
                    f"{what} file {src.display} has {ds.count} bands, expected at least "
                    f"{max(indexes)}"
                )
            try:
                data = ds.read(indexes=indexes)  # never masked: band 4 of RGBIR is flagged alpha
            except Exception as exc:
                raise TileError(f"{what} file {src.display} is corrupt ({exc})") from None
            georef = ds.crs is not None and not ds.transform.is_identity
            return data, (ds.crs, ds.transform) if georef else None


def local_vaihingen_transform(tile: str, gsd: float = 0.09) -> Affine:
    """Return the documented local grid of an un-georeferenced Vaihingen area (see :mod:`isprs`)."""
    x0 = isprs.VAIHINGEN_LOCAL_ORIGIN[0] + int(tile) * isprs.VAIHINGEN_LOCAL_SPACING
    return Affine(gsd, 0.0, x0, 0.0, -gsd, isprs.VAIHINGEN_LOCAL_ORIGIN[1])


def resample(arr: np.ndarray, src_t: Affine, dst_t: Affine, crs, shape: tuple[int, int],
              method: Resampling, nodata: float | None) -> np.ndarray:
    """Resample a 2-D or band-first array from ``src_t`` to ``dst_t`` (same CRS, one thread)."""
    squeeze = arr.ndim == 2
    src = arr[None] if squeeze else arr
    dst = np.empty((src.shape[0], *shape), src.dtype)
    if nodata is not None:
        dst.fill(nodata)
    reproject(src, dst, src_transform=src_t, src_crs=crs, dst_transform=dst_t, dst_crs=crs,
              resampling=method, src_nodata=nodata, dst_nodata=nodata, num_threads=1)
    return dst[0] if squeeze else dst


def write_gtiff(path: Path, data: np.ndarray, transform: Affine, crs, *, nodata=None,
                 colormap: dict | None = None, descriptions: list[str] | None = None,
                 photometric: str | None = None) -> None:
    """Write a tiled, deflate-compressed GeoTIFF to ``path`` (callers pass a temp name)."""
    arr = data[None] if data.ndim == 2 else data
    profile = {
        "driver": "GTiff", "width": arr.shape[2], "height": arr.shape[1], "count": arr.shape[0],
        "dtype": arr.dtype.name, "crs": crs, "transform": transform, "nodata": nodata,
        "tiled": True, "blockxsize": 256, "blockysize": 256, "compress": "deflate",
        "zlevel": 1, "interleave": "pixel" if arr.shape[0] > 1 else "band",
    }
    if photometric:
        profile["photometric"] = photometric
    if arr.dtype == np.float32:
        profile["predictor"] = 3
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(arr)
        if colormap:
            dst.write_colormap(1, colormap)
        for i, d in enumerate(descriptions or [], start=1):
            dst.set_band_description(i, d)
