"""Georeferenced inference of one raster file: stream windows, write COGs and styles.

``predict_raster`` ties the pieces together for one input:
:mod:`raster_io` (bands, masks, GSD, AOI) -> :mod:`windows` (grid) -> :mod:`engine`
(blended rows, streamed) -> :mod:`writers` (COG GeoTIFFs) -> :mod:`qml` (QGIS styles),
:mod:`preview` (PNG) and optionally :mod:`vectorize` (GeoPackage).

Resolution: when the input GSD and the checkpoint's training GSD (``meta.gsd``) are
both known and differ by more than 5 %, windows are resampled to the model GSD for
inference and back to the input grid (``scale = input GSD / model GSD``). Factors
beyond :data:`MAX_RESAMPLE` are not resampled (a warning says the GSD is far from
training). Outputs are always on exactly the input grid.
"""

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rasterio.errors import RasterioError

from semimtl_geo.errors import UserError
from semimtl_geo.inference.engine import BlendedRows, run_sliding_windows
from semimtl_geo.inference.predictor import WindowPredictor
from semimtl_geo.inference.publish import OutputSet, family, remove_leftovers
from semimtl_geo.inference.qml import write_class_qml, write_confidence_qml, write_height_qml
from semimtl_geo.inference.raster_io import RasterInput, open_input
from semimtl_geo.inference.scaling import ValueMapping, plan_mapping, raster_sample
from semimtl_geo.inference.sources import is_gdal_path, source_name, source_stem, to_gdal_path
from semimtl_geo.inference.windows import make_grid
from semimtl_geo.inference.writers import (
    OutputRaster,
    class_raster,
    commit_all,
    confidence_raster,
    confidence_to_file,
    height_raster,
    height_to_file,
)
from semimtl_geo.outputs import is_write_error, write_error

#: GSD ratios within this tolerance are treated as equal (no resampling).
GSD_TOLERANCE = 0.05
#: Largest resampling factor applied (either direction).
MAX_RESAMPLE = 8.0
#: Warn when the input GSD differs from training by more than this factor.
GSD_WARN_FACTOR = 1.5


@dataclass
class RasterOutputs:
    """Paths written for one input (``None`` for outputs not produced)."""

    class_tif: Path | None = None
    height_tif: Path | None = None
    class_qml: Path | None = None
    height_qml: Path | None = None
    preview: Path | None = None
    vectors: Path | None = None
    confidence_tif: Path | None = None
    confidence_qml: Path | None = None
    scale: float = 1.0
    windows: int = 0

    def paths(self) -> list[Path]:
        """All written files."""
        return [p for p in (self.class_tif, self.height_tif, self.class_qml, self.height_qml,
                            self.preview, self.vectors, self.confidence_tif,
                            self.confidence_qml) if p is not None]


def output_paths(
    out_dir: Path, stem: str, tasks: tuple[str, ...], vectorize: bool, confidence: bool = False
) -> dict[str, Path]:
    """Return the final output file names of one input."""
    paths: dict[str, Path] = {"preview": out_dir / f"{stem}_preview.png"}
    if "seg" in tasks:
        paths["class_tif"] = out_dir / f"{stem}_class.tif"
        paths["class_qml"] = out_dir / f"{stem}_class.qml"
        if vectorize:
            paths["vectors"] = out_dir / f"{stem}_classes.gpkg"
        if confidence:
            paths["confidence_tif"] = out_dir / f"{stem}_confidence.tif"
            paths["confidence_qml"] = out_dir / f"{stem}_confidence.qml"
    if "height" in tasks:
        paths["height_tif"] = out_dir / f"{stem}_height.tif"
        paths["height_qml"] = out_dir / f"{stem}_height.qml"
    return paths


def resample_scale(input_gsd: float | None, model_gsd: float | None, name: str,
                   resample: bool) -> float:
    """Scale factor (input GSD / model GSD) used for the windows, with warnings."""
    if input_gsd is None:
        warnings.warn(
            f"'{name}' has no CRS: outputs copy its pixel grid without georeferencing and "
            "its GSD is unknown, so it is not resampled to the training GSD.",
            stacklevel=2,
        )
        return 1.0
    if model_gsd is None or model_gsd <= 0:
        return 1.0
    ratio = input_gsd / model_gsd
    far = max(ratio, 1 / ratio) > GSD_WARN_FACTOR
    if abs(ratio - 1.0) <= GSD_TOLERANCE:
        return 1.0
    if not resample:
        if far:
            warnings.warn(
                f"'{name}' has a GSD of {input_gsd:.3g} m but the model was trained at "
                f"{model_gsd:.3g} m and --no-resample is set; predictions may be poor.",
                stacklevel=2,
            )
        return 1.0
    if max(ratio, 1 / ratio) > MAX_RESAMPLE:
        warnings.warn(
            f"'{name}' has a GSD of {input_gsd:.3g} m, far from the training GSD of "
            f"{model_gsd:.3g} m (more than {MAX_RESAMPLE:g}x); it is predicted at its own "
            "resolution and results may be poor.",
            stacklevel=2,
        )
        return 1.0
    return ratio


class _HeightRange:
    """Robust display range of predicted heights from a bounded subsample."""

    def __init__(self, limit: int = 200_000) -> None:
        self.samples: list[np.ndarray] = []
        self.count = 0
        self.limit = limit

    def add(self, height: np.ndarray) -> None:
        values = height[np.isfinite(height)]
        if values.size and self.count < self.limit:
            step = max(1, values.size // 2000)
            picked = values[::step].copy()  # a copy: a view would keep all rows alive
            self.samples.append(picked)
            self.count += picked.size

    def range(self) -> tuple[float, float]:
        if not self.samples:
            return 0.0, 1.0
        values = np.concatenate(self.samples)
        lo, hi = np.percentile(values, [2, 98])
        return float(lo), float(hi)


def check_outputs_free(out_dir: Path, stem: str, overwrite: bool) -> None:
    """Refuse to replace an existing output set unless ``overwrite``.

    Any file of the stem's set counts (see :func:`~semimtl_geo.inference.publish.family`),
    not only those this run would write: a new set is never mixed into an old one.

    Raises:
        UserError: an output of the same input already exists.

    """
    if overwrite:
        return
    existing = [p for p in family(out_dir, stem) if p.exists()]
    if existing:
        raise UserError(
            f"Output '{existing[0]}' already exists; pass --overwrite to replace the outputs "
            "of that input or choose another output folder."
        )


def predict_raster(
    predictor: WindowPredictor,
    input_path: str | Path,
    out_dir: str | Path,
    *,
    patch_size: int | None = None,
    overlap: float | None = None,
    batch_size: int = 4,
    bands: str | None = None,
    aoi: str | Path | None = None,
    overwrite: bool = False,
    vectorize: bool = False,
    resample: bool = True,
    preview: bool = True,
    on_windows: Callable[[int], None] | None = None,
    on_grid: Callable[[int], None] | None = None,
    confidence: bool = False,
    rescale: str | None = None,
    value_scale: float | None = None,
) -> RasterOutputs:
    """Predict one raster and write its outputs on exactly the input grid.

    The outputs of the input are built in a hidden staging folder and published together
    (:class:`~semimtl_geo.inference.publish.OutputSet`): after a failure the folder holds
    the previous set untouched and no new file; after success, the new set only.

    Args:
        predictor: batched model runner (model, meta, tasks, device).
        input_path: GeoTIFF or any GDAL raster: a local file (VRTs included), a GDAL
            path (``/vsicurl/...``, ``/vsis3/...``) or a URL (see
            :mod:`semimtl_geo.inference.sources`); outputs are named after its file name.
        out_dir: output folder (created).
        patch_size: window size in model pixels (default ``meta.patch_size``).
        overlap: window overlap fraction (default ``meta.overlap``).
        batch_size: windows per forward pass.
        bands: ``--bands`` spec (1-based numbers or band descriptions, comma-separated).
        aoi: vector file; only pixels inside its polygons are predicted.
        overwrite: replace existing outputs.
        vectorize: also write ``<stem>_classes.gpkg``.
        resample: resample windows to the training GSD when it differs.
        preview: write ``<stem>_preview.png``.
        on_windows: progress callback (windows done).
        on_grid: called once with the number of windows of this raster.
        confidence: also write ``<stem>_confidence.tif``: the blended probability of
            the predicted class, uint8 percent 0-100 (nodata 255), with a QML ramp.
        rescale: ``none``, ``minmax`` or ``percentile``: how input values of another
            dtype than the training pixels are mapped to their range
            (:mod:`~semimtl_geo.inference.scaling`); ``None`` refuses such inputs.
        value_scale: multiply input values by this factor instead (``--scale``).

    Returns:
        The published paths.

    Raises:
        UserError: unreadable or damaged input, band mismatch, empty AOI, existing outputs
            (without ``overwrite``), a full or read-only output location.

    """
    meta = predictor.meta
    input_path = to_gdal_path(input_path) if is_gdal_path(input_path) else Path(input_path)
    name, stem = source_name(input_path), source_stem(input_path)
    out_dir = Path(out_dir)
    if confidence and "seg" not in predictor.tasks:
        raise UserError(
            "--confidence needs the 'seg' task (it is the probability of the predicted "
            "class); drop --confidence or predict with --tasks seg."
        )
    paths = output_paths(out_dir, stem, predictor.tasks, vectorize, confidence)
    check_outputs_free(out_dir, stem, overwrite)
    src: RasterInput = open_input(input_path, predictor.in_channels, list(meta.bands), bands, aoi)
    try:
        mapping = plan_mapping(
            src.src.dtypes[src.bands[0] - 1], meta.input_dtype, meta.input_range,
            name, rescale, value_scale, lambda: raster_sample(src),
        )
        if not mapping.identity:
            warnings.warn(f"'{name}' values are {mapping.description}.", stacklevel=2)
        for leftover in remove_leftovers(out_dir, stem):
            warnings.warn(f"Removed '{leftover.name}', left in '{out_dir}' by an interrupted run.",
                          stacklevel=2)
        with OutputSet(out_dir, stem) as outputs:
            result = _predict_into(predictor, src, input_path, name, outputs, paths, patch_size,
                                   overlap, batch_size, vectorize, resample, preview, confidence,
                                   on_windows, on_grid, mapping)
            written = [key for key in paths if getattr(result, key) is not None]
            outputs.publish([paths[key] for key in written])
        for key in written:
            setattr(result, key, paths[key])
        return result
    finally:
        src.close()


def gdal_reason(exc: BaseException) -> str:
    """Return the most specific message of a GDAL error chain (rasterio's outer one is vague)."""
    messages = []
    current: BaseException | None = exc
    for _ in range(10):
        if current is None:
            break
        text = str(current).splitlines()[0].strip() if str(current) else ""
        if text and "see previous exception" not in text.lower():
            messages.append(text)
        current = current.__cause__ or current.__context__
    return (messages[-1] if messages else type(exc).__name__)[:160]


def _reader(
    src: RasterInput, name: str, mapping: ValueMapping
) -> Callable[[int, int], tuple[np.ndarray, np.ndarray]]:
    """``src.read_strip`` on the model's value scale; a damaged block is one sentence."""

    def read_strip(y0: int, y1: int) -> tuple[np.ndarray, np.ndarray]:
        try:
            pixels, valid = src.read_strip(y0, y1)
            return mapping.apply(pixels), valid
        except (RasterioError, OSError) as exc:
            raise UserError(
                f"'{name}' has unreadable data in rows {y0} to {y1 - 1} ({gdal_reason(exc)}); "
                "the file is damaged: re-download or re-export it."
            ) from None

    return read_strip


def _predict_into(
    predictor: WindowPredictor,
    src: RasterInput,
    input_path: Path | str,
    name: str,
    outputs: OutputSet,
    paths: dict[str, Path],
    patch_size: int | None,
    overlap: float | None,
    batch_size: int,
    vectorize: bool,
    resample: bool,
    preview: bool,
    confidence: bool,
    on_windows: Callable[[int], None] | None,
    on_grid: Callable[[int], None] | None,
    mapping: ValueMapping,
) -> RasterOutputs:
    """Write every output of one input into the staging folder of ``outputs``.

    The returned paths are the staged files; :func:`predict_raster` publishes them.
    """
    meta = predictor.meta
    staged = {key: outputs.staged(p) for key, p in paths.items()}
    scale = resample_scale(src.gsd(), meta.gsd, name, resample)
    grid = make_grid(
        src.height, src.width,
        int(patch_size if patch_size is not None else meta.patch_size),
        float(overlap if overlap is not None else meta.overlap),
        scale,
    )
    if on_grid:
        on_grid(grid.num_windows)
    crs, transform = src.src.crs, src.src.transform
    writers: list[OutputRaster] = []
    cls_out = hgt_out = conf_out = None
    hrange = _HeightRange()
    try:
        if "seg" in predictor.tasks:
            cls_out = class_raster(staged["class_tif"], src.width, src.height, crs, transform,
                                   meta.classes)
            writers.append(cls_out)
        if "height" in predictor.tasks:
            hgt_out = height_raster(staged["height_tif"], src.width, src.height, crs,
                                    transform, meta.height_unit)
            writers.append(hgt_out)
        if confidence:
            conf_out = confidence_raster(staged["confidence_tif"], src.width, src.height,
                                         crs, transform)
            writers.append(conf_out)

        def sink(rows: BlendedRows) -> None:
            if cls_out is not None and rows.classes is not None:
                cls_out.write_rows(rows.row_start, rows.classes)
            if hgt_out is not None and rows.height is not None:
                hgt_out.write_rows(rows.row_start, height_to_file(rows.height))
                hrange.add(rows.height)
            if conf_out is not None and rows.probs is not None:
                conf_out.write_rows(rows.row_start, confidence_to_file(rows.probs, rows.valid))

        run_sliding_windows(grid, _reader(src, name, mapping), predictor, sink,
                            batch_size=batch_size, keep_probs=confidence, on_windows=on_windows)
        commit_all(writers)
    except BaseException as exc:
        for writer in writers:
            writer.discard()
        if is_write_error(exc):
            raise write_error(outputs.out_dir, exc) from None  # type: ignore[arg-type]
        if isinstance(exc, RasterioError):  # reads are reported by _reader: this is a write
            raise UserError(
                f"Could not write the outputs of '{name}' in '{outputs.out_dir}' "
                f"({gdal_reason(exc)}); free disk space or choose another output folder."
            ) from None
        raise
    result = RasterOutputs(scale=scale, windows=grid.num_windows)
    if cls_out is not None:
        result.class_tif = staged["class_tif"]
        result.class_qml = write_class_qml(staged["class_qml"], meta.classes)
    if hgt_out is not None:
        result.height_tif = staged["height_tif"]
        lo, hi = hrange.range()
        if not math.isfinite(lo) or not math.isfinite(hi):
            lo, hi = 0.0, 1.0
        result.height_qml = write_height_qml(staged["height_qml"], lo, hi, meta.height_unit)
    if conf_out is not None:
        result.confidence_tif = staged["confidence_tif"]
        result.confidence_qml = write_confidence_qml(staged["confidence_qml"])
    if preview:
        from semimtl_geo.inference.preview import write_preview

        result.preview = write_preview(
            staged["preview"], input_path, src.bands, meta.classes,
            result.class_tif, result.height_tif, meta.height_unit,
        )
    if vectorize and result.class_tif is None:
        warnings.warn("--vectorize needs the 'seg' task; no polygons were written.",
                      stacklevel=2)
    if vectorize and result.class_tif is not None:
        from semimtl_geo.inference.vectorize import vectorize_classes

        result.vectors = vectorize_classes(
            result.class_tif, staged["vectors"], meta.classes, result.height_tif
        )
    return result
