"""What the manifest says about a prepared dataset: band statistics, patch counts, entries."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from semimtl_geo.data import isprs
from semimtl_geo.data.isprs.manifest import (
    MANIFEST_NAME,
    DatasetEntry,
    Manifest,
    TileEntry,
    load_manifest,
)
from semimtl_geo.data.isprs.prepare.discovery import tile_sort_key
from semimtl_geo.data.isprs.prepare.jobs import PrepareOptions, TileResult
from semimtl_geo.errors import UserError
from semimtl_geo.grid import grid_count


def band_stats(hists: Iterable[list[list[int]]]) -> tuple[list[float], list[float]]:
    """Per-band mean/std on the pixel/255 scale from per-tile 256-bin histograms."""
    total = None
    for h in hists:
        arr = np.asarray(h, np.float64)
        total = arr if total is None else total + arr
    if total is None:
        return [], []
    v = np.arange(256, dtype=np.float64) / 255.0
    n = total.sum(axis=1)
    mean = (total * v).sum(axis=1) / n
    var = (total * v * v).sum(axis=1) / n - mean * mean
    return mean.tolist(), np.sqrt(np.maximum(var, 1e-12)).tolist()


def patch_count(width: int, height: int, patch_size: int = 512, overlap: float = 0.5) -> int:
    """Patches of the per-tile, edge-aligned evaluation grid (see ``grid_count``)."""
    stride = isprs.GridSpec(patch_size, overlap).stride
    return (grid_count(width, patch_size, stride)
            * grid_count(height, patch_size, stride))


def load_existing_manifest(out: Path) -> Manifest:
    """Return the folder's manifest (its other datasets are kept), or an empty one."""
    if (out / MANIFEST_NAME).is_file():
        try:
            return load_manifest(out)
        except UserError:
            pass
    return Manifest()


def dataset_entry(dataset: str, root: Path, results: list[TileResult], info: dict[str, Any],
                      opts: PrepareOptions) -> DatasetEntry:
    """Build the manifest entry of one dataset: grid, bands, stats, splits, patches, tiles."""
    ok = [r for r in results if r.ok]
    ok.sort(key=lambda r: tile_sort_key(r.tile))
    train = [r for r in ok if r.split == "train"]
    mean, std = band_stats(r.band_hist for r in (train or ok))
    split = {s: [r.tile for r in ok if r.split == s] for s in ("train", "test")}
    for r in ok:
        r.record["patches"] = patch_count(r.record["width"], r.record["height"], opts.patch_size,
                                          opts.overlap)
    counts = {s: sum(r.record["patches"] for r in ok if r.split == s) for s in ("train", "test")}
    has_height = bool(ok) and all(r.record["ndsm"] for r in ok)
    georef = sorted({r.record["georeferencing"] for r in ok})
    entry = DatasetEntry(
        source_root=str(root.resolve()),
        archives=info["archives"],
        bands=info["bands"],
        image_product=info["image_product"],
        gsd=opts.target_gsd,
        native_gsd=isprs.NATIVE_GSD[dataset],
        crs=ok[0].record["crs"] if ok else None,
        georeferencing=georef[0] if len(georef) == 1 else georef,
        labels=opts.labels,
        label_file_pattern=info["label_file_pattern"],
        has_labels=bool(ok),
        has_height=has_height,
        height={
            "file_pattern": info["ndsm_file_pattern"],
            "normalisation": "8-bit grey level / 255 -> [0, 1]; nodata NaN",
            "height_scale": opts.height_scale.get(dataset, isprs.DEFAULT_HEIGHT_SCALE),
            "height_unit": "m",
            "scale_note": ("assumed metres per normalised unit (grey level 255); the ISPRS nDSMs "
                           "document no vertical scale, set it with --"
                           f"{dataset}-height-scale"),
        } if opts.ndsm else None,
        height_scale=opts.height_scale.get(dataset, isprs.DEFAULT_HEIGHT_SCALE),
        mean=mean,
        std=std,
        stats_from="train" if train else "all",
        official_split={s: list(isprs.SPLITS[dataset][s]) for s in ("train", "test")},
        split=split,
        patch_counts=counts,
        tiles=[TileEntry.from_dict(r.record) for r in ok],
        failed=[{"tile_id": r.tile, "error": r.error} for r in results if not r.ok],
    )
    if dataset == "vaihingen" and "local" in georef:
        entry.local_grid = {
            "crs": isprs.VAIHINGEN_LOCAL_CRS,
            "note": ("The Vaihingen tops carry no georeferencing: each area got a local grid at "
                     f"{isprs.NATIVE_GSD['vaihingen']} m with its top-left corner at "
                     f"x = {isprs.VAIHINGEN_LOCAL_ORIGIN[0]:.0f} + N * "
                     f"{isprs.VAIHINGEN_LOCAL_SPACING:.0f}, "
                     f"y = {isprs.VAIHINGEN_LOCAL_ORIGIN[1]:.0f} in {isprs.VAIHINGEN_LOCAL_CRS}; "
                     "positions are placeholders, not true locations."),
        }
    return entry
