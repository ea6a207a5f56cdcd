"""Prepare the ISPRS Potsdam/Vaihingen downloads as aligned GeoTIFF tiles plus a manifest.

For every tile of a dataset three GeoTIFFs are written on one grid at the target GSD::

    OUT/<dataset>/image/<name>.tif   uint8, bands as chosen, photometric MINISBLACK
    OUT/<dataset>/label/<name>.tif   uint8 class ids 0-5, 255 = ignore (nodata), colour table
    OUT/<dataset>/ndsm/<name>.tif    float32 nDSM normalised to [0, 1] (grey/255), nodata NaN
    OUT/<dataset>/preview.png        image, labels and nDSM of one prepared tile
    OUT/manifest.json                sources, grid, bands, classes, splits, stats, patch counts

``<name>`` is ``potsdam_{r}_{c}`` or ``vaihingen_area{N}``.

Georeferencing: Potsdam orthos keep their EPSG:32633 grid; the labels and nDSMs, which carry
none, take the ortho's grid once their shape has been checked (the one-row-short nDSM of
tile 03_13 is padded with nodata; differences of more than two pixels fail the tile).
Vaihingen tops without georeferencing get the documented local grid of
:data:`semimtl_geo.data.isprs.VAIHINGEN_LOCAL_CRS` (manifest ``"georeferencing": "local"``).

Resampling from the native GSD to the target GSD (Potsdam 5 cm -> 9 cm by default): images
by area-weighted averaging, labels by majority vote (GDAL ``mode``; class ids are never
interpolated), nDSM by averaging the valid pixels.

Tiles are processed one at a time per worker, so memory stays around one 6000x6000 tile;
each tile's three files are written under temporary names and renamed only when all three
succeeded. A tile that fails is reported by name and the others go on.
"""

from __future__ import annotations

import dataclasses
import math
import multiprocessing
import re
import shutil
import time
import warnings
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning
from rasterio.warp import reproject
from tqdm.auto import tqdm

from semimtl_geo import __version__
from semimtl_geo.atomic import atomic_output, atomic_outputs, atomic_write_json
from semimtl_geo.data import isprs
from semimtl_geo.data.isprs.archives import SourceFile, SourceIndex
from semimtl_geo.data.isprs.manifest import (
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    DatasetEntry,
    Manifest,
    TileEntry,
    load_manifest,
    read_manifest_file,
)
from semimtl_geo.errors import UserError
from semimtl_geo.grid import grid_count
from semimtl_geo.outputs import SOFTWARE, check_output_dir

#: Largest nDSM/ortho size difference (pixels per axis) that is padded/cropped, not failed.
NDSM_SHAPE_TOLERANCE = 2
#: GDAL block cache (MB) while preparing a tile.
GDAL_CACHE_MB = 64


@dataclass
class PrepareOptions:
    """Options of :func:`prepare_isprs` (the CLI flags of ``semimtl-geo prepare-isprs``).

    Attributes:
        target_gsd: output metres per pixel (the paper resamples Potsdam to 9 cm).
        potsdam_bands: ``IRRG`` (paper default), ``RGB`` or ``RGBIR``.
        labels: ``all`` (full labels) or ``noBoundary`` (eroded; boundary -> 255).
        ndsm: prepare the nDSM layer (False: images and labels only).
        potsdam_ndsm: which Potsdam nDSM product, ``lastools`` or ``ownapproach``.
        height_scale: metres per normalised nDSM unit, per dataset.
        workers: parallel tile workers (processes).
        overwrite: replace an existing prepared dataset.
        tiles: restrict to these tile ids per dataset (a dataset absent from the dict, or
            None, means all tiles found).
        patch_size: evaluation patch size used for the patch counts in the manifest.
        overlap: evaluation patch overlap.
        progress: show progress bars.
        preview: write ``OUT/<dataset>/preview.png`` of one prepared tile.

    """

    target_gsd: float = 0.09
    potsdam_bands: str = "IRRG"
    labels: str = "all"
    ndsm: bool = True
    potsdam_ndsm: str = "lastools"
    height_scale: dict[str, float] = field(
        default_factory=lambda: dict.fromkeys(isprs.DATASETS, isprs.DEFAULT_HEIGHT_SCALE)
    )
    workers: int = 1
    overwrite: bool = False
    tiles: dict[str, list[str]] | None = None
    patch_size: int = 512
    overlap: float = 0.5
    progress: bool = True
    preview: bool = True


@dataclass
class TileJob:
    """Everything a worker needs to prepare one tile (picklable)."""

    dataset: str
    tile: str
    split: str | None
    image: SourceFile
    band_indexes: list[int]
    bands: list[str]
    label: SourceFile | None
    ndsm: SourceFile | None
    out_root: str
    target_gsd: float
    native_gsd: float


@dataclass
class TileResult:
    """Outcome of one tile: its manifest record, or the error that failed it."""

    dataset: str
    tile: str
    split: str | None
    ok: bool
    error: str = ""
    record: dict[str, Any] = field(default_factory=dict)
    band_hist: list[list[int]] | None = None
    seconds: float = 0.0
    source_bytes: int = 0


@dataclass
class PrepareReport:
    """What :func:`prepare_isprs` did."""

    manifest_path: Path
    results: list[TileResult]

    @property
    def failed(self) -> list[TileResult]:
        """Tiles that could not be prepared."""
        return [r for r in self.results if not r.ok]

    @property
    def unknown_colors(self) -> dict[str, dict[str, int]]:
        """``tile -> {"r,g,b": pixel count}`` of label colours outside the class table."""
        return {f"{r.dataset}/{r.tile}": r.record["unknown_colors"]
                for r in self.results if r.ok and r.record.get("unknown_colors")}


class TileError(Exception):
    """A problem with one tile's files (reported by tile name, does not stop the run)."""


# ----------------------------------------------------------------------------------------
# discovery
# ----------------------------------------------------------------------------------------

_POTSDAM_TILE = r"(?P<tile>\d+_\d+)"


def _scan(index: SourceIndex, regex: str) -> dict[str, list[SourceFile]]:
    """Map tile id -> candidate files whose base name matches ``regex`` (group ``tile``)."""
    pat = re.compile(regex)
    out: dict[str, list[SourceFile]] = {}
    for name in index.names():
        m = pat.fullmatch(name)
        if m:
            out.setdefault(m.group("tile"), []).extend(index.find(name))
    return out


def _pattern_regex(pattern: str, tile_group: str) -> str:
    """Turn ``top_potsdam_{tile}_IRRG.tif`` into a regex with a named ``tile`` group."""
    esc = re.escape(pattern).replace(r"\{tile\}", tile_group)
    return esc.replace(r"\{rr\}_\{cc\}", r"(?P<tile>\d+_\d+)")


def _is_vaihingen_gt(f: SourceFile) -> bool:
    """Vaihingen tops and ground truth share base names: tell them apart by location.

    Ground truth lives in a ``*ground_truth*`` zip/folder, or flat outside any ``top``
    folder; tops live in a ``top`` folder (of ``ISPRS_semantic_labeling_Vaihingen.zip``).
    """
    if any("ground_truth" in p or p == "gts_for_participants" for p in f.parts):
        return True
    return f.parent != "top"


def _potsdam_jobs(index: SourceIndex, root: Path, opts: PrepareOptions,
                  out_root: Path) -> tuple[list[TileJob], dict[str, Any]]:
    bands = list(isprs.POTSDAM_BAND_SETS[opts.potsdam_bands])
    # Products that can provide the chosen bands, best first (RGBIR holds every band).
    products = [opts.potsdam_bands] + (["RGBIR"] if opts.potsdam_bands != "RGBIR" else [])
    orthos: dict[str, tuple[SourceFile, str]] = {}
    for prod in reversed(products):
        _, pattern, _names = isprs.POTSDAM_ORTHOS[prod]
        for tile, files in _scan(index, _pattern_regex(pattern, _POTSDAM_TILE)).items():
            orthos[tile] = (files[0], prod)
    if not orthos:
        wanted = " or ".join(
            f"{isprs.POTSDAM_ORTHOS[p][0]} "
            f"(files {isprs.POTSDAM_ORTHOS[p][1].format(tile='{r}_{c}')})"
            for p in products
        )
        raise UserError(
            f"No Potsdam orthos found under '{root}': expected {wanted}, as the downloaded zip, "
            f"inside {isprs.POTSDAM_OUTER_ZIP}, or extracted."
        )
    lpat = isprs.POTSDAM_LABEL_PATTERNS[opts.labels]
    labels = _scan(index, _pattern_regex(lpat, _POTSDAM_TILE))
    if not labels:
        raise UserError(
            f"No Potsdam labels found under '{root}': expected "
            f"{isprs.POTSDAM_LABEL_ZIPS[opts.labels]} holding {lpat.format(tile='{r}_{c}')} "
            "files (zipped or extracted)."
        )
    ndsm_files: dict[str, list[SourceFile]] = {}
    npat = isprs.POTSDAM_NDSM_PATTERNS[opts.potsdam_ndsm]
    if opts.ndsm:
        raw = _scan(index, _pattern_regex(npat, _POTSDAM_TILE))
        ndsm_files = {"_".join(str(int(v)) for v in k.split("_")): v for k, v in raw.items()}
        if not ndsm_files:
            raise UserError(
                f"No Potsdam nDSM found under '{root}': expected {isprs.POTSDAM_NDSM_ZIP} holding "
                f"{npat.format(rr='{rr}', cc='{cc}')} files (zero-padded ids); pass --no-ndsm to "
                "prepare images and labels only."
            )
    jobs = []
    wanted_tiles = set(opts.tiles["potsdam"]) if opts.tiles and "potsdam" in opts.tiles else None
    for tile in sorted(orthos, key=_tile_sort_key):
        if wanted_tiles is not None and tile not in wanted_tiles:
            continue
        src, prod = orthos[tile]
        file_bands = isprs.POTSDAM_ORTHOS[prod][2]
        jobs.append(TileJob(
            dataset="potsdam", tile=tile, split=isprs.split_of("potsdam", tile), image=src,
            band_indexes=[file_bands.index(b) + 1 for b in bands], bands=bands,
            label=(labels.get(tile) or [None])[0],
            ndsm=(ndsm_files.get(tile) or [None])[0] if opts.ndsm else None,
            out_root=str(out_root), target_gsd=opts.target_gsd,
            native_gsd=isprs.NATIVE_GSD["potsdam"],
        ))
    info = {
        "bands": bands,
        "image_product": sorted({orthos[j.tile][1] for j in jobs}),
        "label_file_pattern": lpat,
        "ndsm_file_pattern": npat if opts.ndsm else None,
    }
    return jobs, info


def _vaihingen_jobs(index: SourceIndex, root: Path, opts: PrepareOptions,
                    out_root: Path) -> tuple[list[TileJob], dict[str, Any]]:
    tile_re = r"(?P<tile>\d+)"
    tops: dict[str, SourceFile] = {}
    gts: dict[str, SourceFile] = {}
    for tile, files in _scan(index, _pattern_regex(isprs.VAIHINGEN_TOP_PATTERN, tile_re)).items():
        for f in files:
            if _is_vaihingen_gt(f):
                gts.setdefault(tile, f)
            else:
                tops.setdefault(tile, f)
    if not tops:
        raise UserError(
            f"No Vaihingen images found under '{root}': expected {isprs.VAIHINGEN_ZIP} holding "
            f"top/{isprs.VAIHINGEN_TOP_PATTERN.format(tile='{N}')} (zipped or extracted)."
        )
    if opts.labels == "noBoundary":
        pat = isprs.VAIHINGEN_LABEL_PATTERNS["noBoundary"]
        gts = {t: fs[0] for t, fs in _scan(index, _pattern_regex(pat, tile_re)).items()}
    if not gts:
        zname = isprs.VAIHINGEN_LABEL_ZIPS[opts.labels]
        pat = isprs.VAIHINGEN_LABEL_PATTERNS[opts.labels].format(tile="{N}")
        raise UserError(
            f"No Vaihingen labels found under '{root}': expected {zname} holding {pat} files "
            "(zipped or extracted)."
        )
    ndsm: dict[str, list[SourceFile]] = {}
    if opts.ndsm:
        ndsm = _scan(index, _pattern_regex(isprs.VAIHINGEN_NDSM_PATTERN, tile_re))
        if not ndsm:
            raise UserError(
                f"No Vaihingen nDSM found under '{root}': expected the nDSM files "
                f"ndsm/{isprs.VAIHINGEN_NDSM_PATTERN.format(tile='{N}')} (zipped or extracted); "
                "pass --no-ndsm to prepare images and labels only."
            )
    wanted_tiles = (set(opts.tiles["vaihingen"]) if opts.tiles and "vaihingen" in opts.tiles
                    else None)
    jobs = []
    for tile in sorted(tops, key=int):
        if wanted_tiles is not None and tile not in wanted_tiles:
            continue
        jobs.append(TileJob(
            dataset="vaihingen", tile=tile, split=isprs.split_of("vaihingen", tile),
            image=tops[tile], band_indexes=[1, 2, 3], bands=list(isprs.VAIHINGEN_BANDS),
            label=gts.get(tile), ndsm=(ndsm.get(tile) or [None])[0] if opts.ndsm else None,
            out_root=str(out_root), target_gsd=opts.target_gsd,
            native_gsd=isprs.NATIVE_GSD["vaihingen"],
        ))
    info = {
        "bands": list(isprs.VAIHINGEN_BANDS),
        "image_product": ["top"],
        "label_file_pattern": isprs.VAIHINGEN_LABEL_PATTERNS[opts.labels],
        "ndsm_file_pattern": isprs.VAIHINGEN_NDSM_PATTERN if opts.ndsm else None,
    }
    return jobs, info


def _tile_sort_key(tile: str) -> tuple[int, ...]:
    return tuple(int(v) for v in tile.split("_"))


# ----------------------------------------------------------------------------------------
# per-tile work
# ----------------------------------------------------------------------------------------


def _open(src: SourceFile, what: str):
    try:
        return rasterio.open(src.gdal_path)
    except Exception as exc:  # GDAL reports corrupt/empty files in many ways
        raise TileError(f"{what} file {src.display} could not be read ({exc})") from None


def _read(src: SourceFile, what: str, indexes: list[int] | None = None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with _open(src, what) as ds:
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


def colors_to_classes(rgb: np.ndarray) -> tuple[np.ndarray, dict[str, int]]:
    """Map an RGB label image (3xHxW) to class ids; unknown colours -> 255 and are counted.

    The boundary colour (0, 0, 0) of the eroded labels becomes the ignore index 255 and is
    not counted as unknown.

    Returns:
        ``(ids uint8 HxW, {"r,g,b": pixel count} of unknown colours)``.

    """
    r, g, b = rgb[0], rgb[1], rgb[2]
    ids = np.full(r.shape, isprs.IGNORE, np.uint8)
    known = np.zeros(r.shape, bool)
    for k, (cr, cg, cb) in enumerate(list(isprs.CLASSES.colors) + [isprs.BOUNDARY_COLOR]):
        m = (r == cr) & (g == cg) & (b == cb)
        known |= m
        if k < len(isprs.CLASSES):
            ids[m] = k
    unknown: dict[str, int] = {}
    if not known.all():
        codes = (r[~known].astype(np.int32) << 16) | (g[~known].astype(np.int32) << 8) | b[~known]
        vals, counts = np.unique(codes, return_counts=True)
        unknown = {f"{v >> 16},{(v >> 8) & 255},{v & 255}": int(c) for v, c in zip(vals, counts)}
    return ids, unknown


def _fit_shape(arr: np.ndarray, shape: tuple[int, int], fill: float) -> np.ndarray:
    """Pad (with ``fill``) or crop a 2-D array at its bottom/right edges to ``shape``."""
    out = np.full(shape, fill, arr.dtype)
    h, w = min(shape[0], arr.shape[0]), min(shape[1], arr.shape[1])
    out[:h, :w] = arr[:h, :w]
    return out


def local_vaihingen_transform(tile: str, gsd: float = 0.09) -> Affine:
    """Return the documented local grid of an un-georeferenced Vaihingen area (see :mod:`isprs`)."""
    x0 = isprs.VAIHINGEN_LOCAL_ORIGIN[0] + int(tile) * isprs.VAIHINGEN_LOCAL_SPACING
    return Affine(gsd, 0.0, x0, 0.0, -gsd, isprs.VAIHINGEN_LOCAL_ORIGIN[1])


def _resample(arr: np.ndarray, src_t: Affine, dst_t: Affine, crs, shape: tuple[int, int],
              method: Resampling, nodata: float | None) -> np.ndarray:
    squeeze = arr.ndim == 2
    src = arr[None] if squeeze else arr
    dst = np.empty((src.shape[0], *shape), src.dtype)
    if nodata is not None:
        dst.fill(nodata)
    reproject(src, dst, src_transform=src_t, src_crs=crs, dst_transform=dst_t, dst_crs=crs,
              resampling=method, src_nodata=nodata, dst_nodata=nodata, num_threads=1)
    return dst[0] if squeeze else dst


def _write_gtiff(path: Path, data: np.ndarray, transform: Affine, crs, *, nodata=None,
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
    image, georef = _read(job.image, "Image", job.band_indexes)
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
    rgb, _ = _read(job.label, "Label")
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

    ndsm = None
    ndsm_note = None
    if job.ndsm is not None:
        raw, _ = _read(job.ndsm, "nDSM", [1])
        raw = raw[0]
        if raw.dtype != np.uint8:
            raise TileError(
                f"nDSM file {job.ndsm.display} is {raw.dtype}, expected 8-bit grey levels"
            )
        ndsm = raw.astype(np.float32) / 255.0
        if ndsm.shape != (h, w):
            dh, dw = h - ndsm.shape[0], w - ndsm.shape[1]
            if abs(dh) > NDSM_SHAPE_TOLERANCE or abs(dw) > NDSM_SHAPE_TOLERANCE:
                raise TileError(
                    f"nDSM/image shape mismatch: nDSM {job.ndsm.display} is "
                    f"{ndsm.shape[1]}x{ndsm.shape[0]} px, "
                    f"image is {w}x{h} px"
                )
            ndsm_note = (f"nDSM {ndsm.shape[1]}x{ndsm.shape[0]} px fitted to {w}x{h} px "
                         "(missing rows/columns are nodata)")
            ndsm = _fit_shape(ndsm, (h, w), np.nan)

    if abs(src_gsd - job.target_gsd) > 1e-9:
        dst_w = int(math.floor(w * src_gsd / job.target_gsd + 1e-6))
        dst_h = int(math.floor(h * src_gsd / job.target_gsd + 1e-6))
        dst_w, dst_h = max(dst_w, 1), max(dst_h, 1)
        dst_t = Affine(job.target_gsd, 0.0, transform.c, 0.0, -job.target_gsd, transform.f)
        shape = (dst_h, dst_w)
        image = _resample(image, transform, dst_t, crs, shape, Resampling.average, None)
        labels = _resample(labels, transform, dst_t, crs, shape, Resampling.mode, None)
        if ndsm is not None:
            ndsm = _resample(ndsm, transform, dst_t, crs, shape, Resampling.average, np.nan)
        transform = dst_t

    paths = output_paths(job.out_root, job.dataset, job.tile)
    with atomic_outputs(paths, suffix=".partial") as tmps:  # Ctrl-C: no partial files
        _write_gtiff(tmps["image"], image, transform, crs, descriptions=job.bands,
                     photometric="MINISBLACK")
        _write_gtiff(tmps["label"], labels, transform, crs, nodata=isprs.IGNORE,
                     colormap=isprs.CLASSES.colormap())
        if ndsm is not None:
            _write_gtiff(tmps["ndsm"], ndsm.astype(np.float32), transform, crs, nodata=float("nan"))

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


# ----------------------------------------------------------------------------------------
# statistics and patch counts
# ----------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------
# preview
# ----------------------------------------------------------------------------------------


def write_preview(out: Path, dataset: str, record: dict[str, Any], max_px: int = 600) -> Path:
    """Save ``OUT/<dataset>/preview.png``: image, labels and nDSM of one prepared tile."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with rasterio.open(out / record["image"]) as src:
        step = max(1, math.ceil(max(src.width, src.height) / max_px))
        shape = (max(1, src.height // step), max(1, src.width // step))
        n = min(3, src.count)
        image = src.read(indexes=list(range(1, n + 1)), out_shape=(n, *shape))
    with rasterio.open(out / record["label"]) as src:
        labels = src.read(1, out_shape=shape)
    panels = [(np.moveaxis(image, 0, -1), "image (first 3 bands)"),
              (isprs.CLASSES.colorize(labels), "labels (black = ignore)")]
    if record.get("ndsm"):
        with rasterio.open(out / record["ndsm"]) as src:
            panels.append((src.read(1, out_shape=shape), "nDSM (normalised)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4.8))
    for ax, (arr, title) in zip(np.atleast_1d(axes), panels):
        im = ax.imshow(arr, interpolation="nearest")
        ax.set_title(title)
        ax.set_axis_off()
        if arr.ndim == 2:
            fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle(f"{dataset} tile {record['tile_id']} ({record['split']}), "
                 f"{record['width']}x{record['height']} px")
    fig.tight_layout()
    path = out / dataset / "preview.png"
    try:
        with atomic_output(path, suffix=".partial") as tmp:
            fig.savefig(tmp, format="png", dpi=80, metadata={"Software": SOFTWARE})
    finally:
        plt.close(fig)
    return path


# ----------------------------------------------------------------------------------------
# driver
# ----------------------------------------------------------------------------------------


def _check_output(out: Path, dataset: str, overwrite: bool) -> None:
    target = out / dataset
    if target.exists() and any(target.rglob("*.tif")):
        if not overwrite:
            raise UserError(
                f"'{target}' already holds prepared {dataset} tiles; pass --overwrite to "
                "replace them."
            )
        shutil.rmtree(target)


def prepare_isprs(potsdam: str | Path | None, vaihingen: str | Path | None, out: str | Path,
                  options: PrepareOptions | None = None) -> PrepareReport:
    """Prepare one or both ISPRS datasets into ``out`` (see the module docstring).

    Args:
        potsdam: folder (or zip) holding the Potsdam download, or None.
        vaihingen: folder (or zip) holding the Vaihingen download, or None.
        out: output folder.
        options: preparation options.

    Returns:
        The report; ``report.failed`` lists tiles that could not be prepared.

    Raises:
        UserError: nothing to do, missing/corrupt archives, an existing output without
            ``overwrite``.

    """
    opts = options or PrepareOptions()
    if potsdam is None and vaihingen is None:
        raise UserError(
            "Nothing to prepare; pass --potsdam and/or --vaihingen with the download folders."
        )
    if opts.potsdam_bands not in isprs.POTSDAM_BAND_SETS:
        raise UserError(
            f"Unknown Potsdam bands '{opts.potsdam_bands}'; use one of "
            f"{', '.join(isprs.POTSDAM_BAND_SETS)}."
        )
    if opts.labels not in ("all", "noBoundary"):
        raise UserError(f"Unknown label variant '{opts.labels}'; use 'all' or 'noBoundary'.")
    if not (opts.target_gsd > 0 and math.isfinite(opts.target_gsd)):
        raise UserError(f"Target GSD must be positive metres per pixel, got {opts.target_gsd}.")
    for dataset, scale in opts.height_scale.items():
        if not (scale > 0 and math.isfinite(scale)):
            raise UserError(
                f"The {dataset} height scale must be positive metres per nDSM unit, got {scale}; "
                f"fix --{dataset}-height-scale."
            )
    out = check_output_dir(Path(out))
    given = {"potsdam": potsdam, "vaihingen": vaihingen}
    for dataset, ids in (opts.tiles or {}).items():
        if ids and given.get(dataset) is None:
            raise UserError(
                f"--tiles {', '.join(ids)} name{'s' if len(ids) == 1 else ''} {dataset} tiles "
                f"but --{dataset} was not given; pass the {dataset} download folder too or "
                "drop those ids."
            )

    plans: list[tuple[str, Path, list[TileJob], dict[str, Any]]] = []
    for dataset, root in given.items():
        if root is None:
            continue
        root = Path(root)
        index = SourceIndex(root)
        builder = _potsdam_jobs if dataset == "potsdam" else _vaihingen_jobs
        jobs, info = builder(index, root, opts, out)
        if not jobs:
            raise UserError(f"No {dataset} tiles selected under '{root}'; check the --tiles ids.")
        wanted = (opts.tiles or {}).get(dataset) or []
        missing = sorted(set(wanted) - {j.tile for j in jobs})
        if missing:
            raise UserError(
                f"Tile id(s) {', '.join(missing)} are not in the {dataset} download under "
                f"'{root}'; check the --tiles ids."
            )
        info["archives"] = index.zips
        plans.append((dataset, root, jobs, info))
    for dataset, _, _, _ in plans:
        _check_output(out, dataset, opts.overwrite)
    out.mkdir(parents=True, exist_ok=True)

    all_jobs = [j for _, _, jobs, _ in plans for j in jobs]
    results: list[TileResult] = []
    bar = tqdm(total=len(all_jobs), desc="prepare-isprs", unit="tile", disable=not opts.progress)
    if opts.workers > 1 and len(all_jobs) > 1:
        # spawn, not fork: the CLI process may hold threads (torch, GDAL) that fork would copy
        # in an inconsistent state.
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=opts.workers, mp_context=ctx) as pool:
            futures = {pool.submit(prepare_tile, j): j for j in all_jobs}
            for fut in as_completed(futures):
                res = fut.result()
                results.append(res)
                bar.set_postfix_str(f"{res.dataset} {res.tile}")
                bar.update()
    else:
        for j in all_jobs:
            bar.set_postfix_str(f"{j.dataset} {j.tile}")
            results.append(prepare_tile(j))
            bar.update()
    bar.close()

    manifest = _load_existing_manifest(out)
    manifest.format = MANIFEST_FORMAT
    manifest.tool = f"semimtl-geo {__version__}"
    manifest.created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    manifest.target_gsd = opts.target_gsd
    manifest.classes = isprs.CLASSES
    manifest.ignore_index = isprs.IGNORE
    manifest.patch_size = opts.patch_size
    manifest.overlap = opts.overlap
    for dataset, root, _jobs, info in plans:
        mine = [r for r in results if r.dataset == dataset]
        manifest.datasets[dataset] = _dataset_manifest(dataset, root, mine, info, opts)
    manifest_path = out / MANIFEST_NAME
    atomic_write_json(manifest_path, manifest.to_dict())
    if opts.preview:
        for dataset, _, _, _ in plans:
            tiles = manifest.datasets[dataset].tiles
            if tiles:
                test = [t for t in tiles if t.split == "test"]
                write_preview(out, dataset, dataclasses.asdict((test or tiles)[0]))
    order = {(j.dataset, j.tile): i for i, j in enumerate(all_jobs)}
    results.sort(key=lambda r: order[(r.dataset, r.tile)])
    return PrepareReport(manifest_path, results)


def _load_existing_manifest(out: Path) -> Manifest:
    """Return the folder's manifest (its other datasets are kept), or an empty one."""
    if (out / MANIFEST_NAME).is_file():
        try:
            return load_manifest(out)
        except UserError:
            pass
    return Manifest()


def _dataset_manifest(dataset: str, root: Path, results: list[TileResult], info: dict[str, Any],
                      opts: PrepareOptions) -> DatasetEntry:
    ok = [r for r in results if r.ok]
    ok.sort(key=lambda r: _tile_sort_key(r.tile))
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


__all__ = [
    "MANIFEST_NAME",
    "PrepareOptions",
    "PrepareReport",
    "TileJob",
    "TileResult",
    "band_stats",
    "colors_to_classes",
    "local_vaihingen_transform",
    "output_paths",
    "patch_count",
    "prepare_isprs",
    "prepare_tile",
    "read_manifest_file",
]
