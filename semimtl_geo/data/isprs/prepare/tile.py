"""One tile: read, check, resample to the target GSD, write its three GeoTIFFs, describe it.

Images are averaged by area, labels resampled by majority vote (GDAL ``mode``: class ids
are never interpolated), nDSMs averaged over their valid pixels. The three files are
written under temporary names and renamed only when all three succeeded
(:func:`semimtl_geo.atomic.atomic_outputs`).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import Resampling

from semimtl_geo.atomic import atomic_outputs
from semimtl_geo.data import isprs
from semimtl_geo.data.isprs.prepare.jobs import TileError, TileJob, TileResult
from semimtl_geo.data.isprs.prepare.labels import colors_to_classes
from semimtl_geo.data.isprs.prepare.ndsm import read_ndsm
from semimtl_geo.data.isprs.prepare.rasters import (
    local_vaihingen_transform,
    read_source,
    resample,
    write_gtiff,
)

#: GDAL block cache (MB) while preparing a tile.
GDAL_CACHE_MB = 64


def output_paths(out_root: str | Path, dataset: str, tile: str) -> dict[str, Path]:
    """Where the prepared image/label/nDSM of a tile go."""
    name = isprs.tile_name(dataset, tile)
    root = Path(out_root) / dataset
    return {layer: root / layer / f"{name}.tif" for layer in ("image", "label", "ndsm")}


def prepare_tile(job: TileJob) -> TileResult:
    """Read, check, resample and write one tile; never raises (errors go in the result)."""
    t0 = time.perf_counter()
    try:
        # Every file is read once in full: a large GDAL block cache would only add to the
        # resident memory (about one tile is the budget), so keep it small.
        with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB):
            result = _prepare_tile(job)
    except TileError as exc:
        result = TileResult(job.dataset, job.tile, job.split, False, str(exc))
    except Exception as exc:  # noqa: BLE001 - any failure of one tile must not stop the others
        result = TileResult(job.dataset, job.tile, job.split, False, f"{type(exc).__name__}: {exc}")
    result.seconds = time.perf_counter() - t0
    result.source_bytes = sum(s.size for s in (job.image, job.label, job.ndsm) if s is not None)
    return result


def _prepare_tile(job: TileJob) -> TileResult:
    image, georef = read_source(job.image, "Image", job.band_indexes)
    if image.dtype != np.uint8:
        raise TileError(f"Image file {job.image.display} is {image.dtype}, expected uint8")
    _, h, w = image.shape
    if georef is not None:
        crs, transform = georef
        georeferencing = "source"
    elif job.dataset == "vaihingen":
        crs = rasterio.crs.CRS.from_string(isprs.VAIHINGEN_LOCAL_CRS)
        transform = local_vaihingen_transform(job.tile, job.native_gsd)
        georeferencing = "local"
    else:
        raise TileError(
            f"Image file {job.image.display} has no georeferencing (expected {isprs.POTSDAM_CRS})"
        )
    src_gsd = abs(transform.a)

    if job.label is None:
        raise TileError(
            f"label file for tile {job.tile} not found (expected next to the other labels)"
        )
    rgb, _ = read_source(job.label, "Label")
    if rgb.shape[0] < 3:
        raise TileError(
            f"Label file {job.label.display} has {rgb.shape[0]} bands, expected 3 (RGB colours)"
        )
    if rgb.shape[1:] != (h, w):
        raise TileError(
            f"label/image shape mismatch: label {job.label.display} is "
            f"{rgb.shape[2]}x{rgb.shape[1]} px, "
            f"image {job.image.display} is {w}x{h} px"
        )
    labels, unknown = colors_to_classes(rgb[:3])
    del rgb

    ndsm, ndsm_note = (None, None) if job.ndsm is None else read_ndsm(job.ndsm, (h, w))

    if abs(src_gsd - job.target_gsd) > 1e-9:
        dst_w = int(math.floor(w * src_gsd / job.target_gsd + 1e-6))
        dst_h = int(math.floor(h * src_gsd / job.target_gsd + 1e-6))
        dst_w, dst_h = max(dst_w, 1), max(dst_h, 1)
        dst_t = Affine(job.target_gsd, 0.0, transform.c, 0.0, -job.target_gsd, transform.f)
        shape = (dst_h, dst_w)
        image = resample(image, transform, dst_t, crs, shape, Resampling.average, None)
        labels = resample(labels, transform, dst_t, crs, shape, Resampling.mode, None)
        if ndsm is not None:
            ndsm = resample(ndsm, transform, dst_t, crs, shape, Resampling.average, np.nan)
        transform = dst_t

    paths = output_paths(job.out_root, job.dataset, job.tile)
    with atomic_outputs(paths, suffix=".partial") as tmps:  # Ctrl-C: no partial files
        write_gtiff(tmps["image"], image, transform, crs, descriptions=job.bands,
                     photometric="MINISBLACK")
        write_gtiff(tmps["label"], labels, transform, crs, nodata=isprs.IGNORE,
                     colormap=isprs.CLASSES.colormap())
        if ndsm is not None:
            write_gtiff(tmps["ndsm"], ndsm.astype(np.float32), transform, crs, nodata=float("nan"))

    out_root = Path(job.out_root)
    valid = np.isfinite(ndsm) if ndsm is not None else None
    record: dict[str, Any] = {
        "tile_id": job.tile,
        "split": job.split,
        "name": isprs.tile_name(job.dataset, job.tile),
        "image": paths["image"].relative_to(out_root).as_posix(),
        "label": paths["label"].relative_to(out_root).as_posix(),
        "ndsm": paths["ndsm"].relative_to(out_root).as_posix() if ndsm is not None else None,
        "width": int(image.shape[2]),
        "height": int(image.shape[1]),
        "transform": [transform.a, transform.b, transform.c, transform.d, transform.e, transform.f],
        "crs": crs.to_string(),
        "georeferencing": georeferencing,
        "source_gsd": src_gsd,
        "source_shape": [int(h), int(w)],
        "sources": {
            "image": job.image.display,
            "label": job.label.display,
            "ndsm": job.ndsm.display if job.ndsm is not None else None,
        },
        "unknown_colors": unknown,
        "class_pixels": np.bincount(labels.ravel(), minlength=256)[
            list(range(len(isprs.CLASSES))) + [isprs.IGNORE]].tolist(),
        "ndsm_note": ndsm_note,
        "ndsm_valid_fraction": float(valid.mean()) if valid is not None else None,
        "ndsm_range": ([float(np.nanmin(ndsm)), float(np.nanmax(ndsm))]
                       if valid is not None and valid.any() else None),
    }
    hist = [np.bincount(band.ravel(), minlength=256).tolist() for band in image]
    return TileResult(job.dataset, job.tile, job.split, True, record=record, band_hist=hist)
