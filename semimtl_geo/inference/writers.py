"""Georeferenced output rasters: streamed, then published as Cloud-Optimized GeoTIFFs.

Rows arrive top to bottom from the sliding-window engine and are written into an
uncompressed tiled GeoTIFF under a hidden temporary name in the output folder (so pixels
are compressed once, not once there and again in the COG). :meth:`OutputRaster.commit`
converts it with GDAL's COG driver (internal tiles, ZSTD with a predictor, overviews;
compression and overviews on all CPU cores, GDAL ``NUM_THREADS``; the outputs of one input
at the same time, :func:`commit_all`) into a second temporary
file that :func:`semimtl_geo.atomic.atomic_output` renames over the final name, so the
final name only ever holds a complete file; :meth:`OutputRaster.discard` (or leaving the
``with`` block with an exception) deletes the temporaries. A run killed with SIGKILL can
leave hidden ``.*.partial*.tif`` files behind, never a half-written ``<stem>_class.tif``.

* Class rasters: uint8, nodata 255, a colour table from the checkpoint's class colours,
  class names in the band metadata (``CLASS_NAMES`` JSON, ``CLASS_<i>``) and the QML
  sidecar; overviews by ``MODE`` so classes are never averaged.
* Height rasters: float32, nodata -9999, band unit (``m``) set, overviews by ``AVERAGE``.
* Confidence rasters (``predict --confidence``): uint8 percent 0-100, the blended
  probability of the predicted class, nodata 255, overviews by ``AVERAGE``.

Outputs keep the input's CRS and float64 affine transform exactly (including rotated or
skewed transforms, and no CRS at all).
"""

import json
import os
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window

from semimtl_geo.atomic import atomic_output
from semimtl_geo.classes import IGNORE_INDEX, ClassTable
from semimtl_geo.outputs import SOFTWARE

#: Nodata value of height rasters (NaN nodata confuses some GIS tools).
HEIGHT_NODATA = -9999.0
#: Internal tile size of the outputs.
BLOCK = 512
#: COG compression. ZSTD (level 1, with GDAL's predictor) wrote float32 heights about 3x
#: faster than DEFLATE and 20 % smaller on a 6000 x 6000 benchmark; every GDAL >= 2.3
#: (QGIS 3, rasterio wheels) reads it. Use ``gdal_translate -co COMPRESS=DEFLATE`` for
#: tools that do not.
COMPRESSION = {"COMPRESS": "ZSTD", "LEVEL": "1", "PREDICTOR": "YES"}
#: Threads GDAL uses for COG compression and overviews.
GDAL_THREADS = "ALL_CPUS"
#: The COG driver computes the overviews into a temporary file first, ZSTD-compressed at
#: its default level unless told otherwise, then decompresses them to write the COG:
#: a compression pass whose output is thrown away (40 % of the CPU time of converting a
#: float32 height raster, measured). Uncompressed, it needs a third of the uncompressed
#: raster's size on disk for a moment (as the uncompressed temporary file itself does,
#: plus a third) and the COG is byte for byte the same.
COG_TMP_COMPRESSION = "NONE"


def _temp_path(final: Path, tag: str) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{final.stem}.", suffix=f".{tag}.tif", dir=final.parent)
    os.close(fd)
    return Path(tmp)


class OutputRaster:
    """A single-band output raster written in row bands and published atomically.

    Args:
        path: final file name.
        width: raster columns.
        height: raster rows.
        crs: CRS of the input (``None`` allowed).
        transform: float64 affine transform of the input.
        dtype: ``"uint8"`` or ``"float32"``.
        nodata: nodata value.
        resampling: overview resampling for the COG (``"MODE"``, ``"NEAREST"``, ``"AVERAGE"``).

    """

    def __init__(
        self,
        path: str | Path,
        width: int,
        height: int,
        crs: CRS | None,
        transform: Affine,
        dtype: str,
        nodata: float,
        resampling: str,
    ) -> None:
        self.path = Path(path)
        self.resampling = resampling
        self.nodata = nodata
        self._tmp = _temp_path(self.path, "partial")
        self._cog: Path | None = None
        profile: dict[str, Any] = {
            "driver": "GTiff", "width": width, "height": height, "count": 1, "dtype": dtype,
            "crs": crs, "transform": transform, "nodata": nodata, "tiled": True,
            "blockxsize": BLOCK, "blockysize": BLOCK, "BIGTIFF": "IF_SAFER",
        }
        self.dst = rasterio.open(self._tmp, "w", **profile)

    def write_rows(self, row_start: int, rows: np.ndarray) -> None:
        """Write ``rows`` (``h x width``) starting at ``row_start``."""
        window = Window(0, row_start, rows.shape[1], rows.shape[0])
        self.dst.write(rows, 1, window=window)

    def commit(self) -> Path:
        """Convert to a COG with overviews and rename it over :attr:`path`."""
        self.dst.close()
        try:
            with atomic_output(self.path, suffix=".cog.tif") as cog, \
                    rasterio.Env(COG_TMP_COMPRESSION=COG_TMP_COMPRESSION):
                self._cog = cog
                rasterio.shutil.copy(
                    self._tmp, cog, driver="COG", BLOCKSIZE=BLOCK, OVERVIEWS="AUTO",
                    RESAMPLING=self.resampling, BIGTIFF="IF_SAFER", NUM_THREADS=GDAL_THREADS,
                    **COMPRESSION,
                )
        finally:
            self._cleanup()
        return self.path

    def discard(self) -> None:
        """Close and delete the temporary files (the final name is untouched)."""
        if not self.dst.closed:
            self.dst.close()
        self._cleanup()

    def _cleanup(self) -> None:
        for tmp in (self._tmp, self._cog):
            if tmp is not None:
                tmp.unlink(missing_ok=True)
                Path(str(tmp) + ".aux.xml").unlink(missing_ok=True)

    def __enter__(self) -> "OutputRaster":
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self.discard()


def commit_all(rasters: Sequence[OutputRaster]) -> None:
    """Commit several rasters at the same time, one thread each (GDAL releases the GIL).

    Each conversion has a single-threaded part (reading, overviews: ``MODE`` on the
    class raster is the slowest) that can run beside the other's compression. Every
    commit runs to its end; then the first error, if any, is raised.
    """
    if len(rasters) <= 1:
        for raster in rasters:
            raster.commit()
        return
    with ThreadPoolExecutor(max_workers=len(rasters), thread_name_prefix="semimtl-cog") as pool:
        futures = [pool.submit(raster.commit) for raster in rasters]
    for future in futures:
        future.result()


def class_raster(
    path: str | Path, width: int, height: int, crs: CRS | None, transform: Affine,
    classes: ClassTable,
) -> OutputRaster:
    """Open a class output (uint8, colour table, class names, nodata 255)."""
    out = OutputRaster(path, width, height, crs, transform, "uint8", IGNORE_INDEX, "MODE")
    out.dst.write_colormap(1, classes.colormap())
    out.dst.set_band_description(1, "class")
    tags = {f"CLASS_{i}": name for i, name in enumerate(classes.names)}
    out.dst.update_tags(1, CLASS_NAMES=json.dumps(list(classes.names)), **tags)
    out.dst.update_tags(CLASS_NAMES=json.dumps(list(classes.names)), TIFFTAG_SOFTWARE=SOFTWARE)
    return out


def height_raster(
    path: str | Path, width: int, height: int, crs: CRS | None, transform: Affine,
    unit: str = "m",
) -> OutputRaster:
    """Open a height output (float32, nodata -9999, band unit ``unit``)."""
    out = OutputRaster(path, width, height, crs, transform, "float32", HEIGHT_NODATA, "AVERAGE")
    out.dst.set_band_description(1, f"height ({unit})")
    out.dst.set_band_unit(1, unit)
    out.dst.update_tags(1, UNIT=unit)
    out.dst.update_tags(TIFFTAG_SOFTWARE=SOFTWARE)
    return out


def height_to_file(values: np.ndarray) -> np.ndarray:
    """Replace NaN (engine nodata) by :data:`HEIGHT_NODATA` for writing."""
    out = values.astype(np.float32, copy=True)
    out[~np.isfinite(out)] = HEIGHT_NODATA
    return out


#: Nodata value of confidence rasters (valid values are 0-100).
CONFIDENCE_NODATA = 255


def confidence_raster(
    path: str | Path, width: int, height: int, crs: CRS | None, transform: Affine,
) -> OutputRaster:
    """Open a confidence output (uint8 percent 0-100, nodata 255)."""
    out = OutputRaster(path, width, height, crs, transform, "uint8", CONFIDENCE_NODATA,
                       "AVERAGE")
    out.dst.set_band_description(1, "confidence (%)")
    out.dst.set_band_unit(1, "%")
    out.dst.update_tags(1, UNIT="%", DEFINITION="blended probability of the predicted class")
    out.dst.update_tags(TIFFTAG_SOFTWARE=SOFTWARE)
    return out


def confidence_to_file(probs: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Blended probability of the chosen class as uint8 percent (nodata 255 off ``valid``).

    Args:
        probs: ``K x h x w`` blended class probabilities (NaN where nothing was predicted).
        valid: ``h x w`` pixels that have a prediction.

    """
    out = np.full(valid.shape, CONFIDENCE_NODATA, np.uint8)
    if valid.any():
        best = probs[:, valid].max(axis=0)
        out[valid] = np.clip(np.rint(best * 100.0), 0, 100).astype(np.uint8)
    return out
