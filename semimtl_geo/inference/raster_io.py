"""Reading input rasters for inference: band selection, validity masks, GSD, AOI.

Validity (what becomes nodata in every output and never reaches the model):

* an **alpha band** (GDAL colour interpretation ``alpha``): pixels with alpha 0. If the
  user selects the alpha band itself as model input (ISPRS Potsdam RGBIR files flag the
  IR band as alpha), it is treated as data and not as a mask;
* an **internal/external mask** (GDAL per-dataset mask, e.g. ``.msk`` or JPEG masks);
* **nodata values**: a pixel is nodata when *every* selected band equals its nodata
  value (GDAL's dataset-mask convention; a dark pixel with one zero band stays valid);
* non-finite values in floating-point rasters;
* outside the ``--aoi`` polygons, when given.

The ground sampling distance is measured from the affine transform (rotation-aware:
``hypot`` of each pixel axis vector) in metres for projected CRSs, approximately in
metres for geographic ones, and unknown without a CRS.
"""

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import ColorInterp, MaskFlags
from rasterio.errors import RasterioError
from rasterio.features import geometry_mask
from rasterio.windows import Window

from semimtl_geo.errors import UserError
from semimtl_geo.inference.sources import is_gdal_path, source_name


@dataclass
class RasterInput:
    """An open input raster with the bands and masks inference needs."""

    path: Path | str
    src: rasterio.DatasetReader
    bands: list[int]
    alpha_band: int | None = None
    internal_mask: bool = False
    nodata: list[float | None] = field(default_factory=list)
    aoi: list | None = None

    @property
    def height(self) -> int:
        """Raster rows."""
        return self.src.height

    @property
    def width(self) -> int:
        """Raster columns."""
        return self.src.width

    def gsd(self) -> float | None:
        """Mean pixel size in metres, or ``None`` without a CRS (see module docstring)."""
        return raster_gsd(self.src)

    def read_strip(self, y0: int, y1: int) -> tuple[np.ndarray, np.ndarray]:
        """Read the selected bands and the valid mask of full-width rows ``[y0, y1)``."""
        window = Window(0, y0, self.width, y1 - y0)
        pixels = self.src.read(indexes=self.bands, window=window)
        valid = np.ones(pixels.shape[1:], dtype=bool)
        if self.alpha_band is not None:
            valid &= self.src.read(self.alpha_band, window=window) > 0
        elif self.internal_mask:
            valid &= self.src.read_masks(self.bands[0], window=window) > 0
        if any(v is not None for v in self.nodata):
            is_nodata = np.ones_like(valid)
            for i, value in enumerate(self.nodata):
                if value is None:
                    is_nodata[:] = False
                elif math.isnan(value):
                    is_nodata &= np.isnan(pixels[i])
                else:
                    is_nodata &= pixels[i] == value
            valid &= ~is_nodata
        if np.issubdtype(pixels.dtype, np.floating):
            valid &= np.isfinite(pixels).all(axis=0)
        if self.aoi is not None:
            valid &= geometry_mask(
                self.aoi, out_shape=valid.shape,
                transform=self.src.window_transform(window), invert=True,
            )
        return pixels, valid

    def close(self) -> None:
        """Close the dataset."""
        self.src.close()


def raster_gsd(src: rasterio.DatasetReader) -> float | None:
    """Mean pixel size in metres (``None`` when the raster has no CRS)."""
    t = src.transform
    xres, yres = math.hypot(t.a, t.d), math.hypot(t.b, t.e)
    size = math.sqrt(xres * yres)
    if src.crs is None:
        return None
    if src.crs.is_geographic:
        lat = (src.bounds.top + src.bounds.bottom) / 2.0
        return size * 111_320.0 * max(math.cos(math.radians(lat)), 1e-6)
    try:
        _, factor = src.crs.linear_units_factor
    except Exception:  # exotic CRS without linear units
        factor = 1.0
    return size * float(factor)


def open_raster(path: str | Path) -> rasterio.DatasetReader:
    """Open a raster with GDAL, turning failures into one-sentence errors.

    Raises:
        UserError: missing, unreadable or corrupt file.

    """
    remote = is_gdal_path(path)
    if not remote:
        path = Path(path)
        if not path.exists():
            raise UserError(f"Input '{path}' does not exist; check the path.")
    try:
        src = rasterio.open(path)
        src.read(1, window=Window(0, 0, min(src.width, 8), min(src.height, 8)))
    except (RasterioError, OSError) as exc:
        reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        if remote:
            raise UserError(
                f"Input '{path}' could not be read by GDAL ({reason}); check the URL or path, "
                "that the server answers HTTP range requests, and the credentials of "
                "/vsis3/, /vsigs/ or /vsiaz/ in the environment."
            ) from None
        raise UserError(
            f"Input '{path}' could not be read as a raster ({reason}); "
            "check that it is a complete GeoTIFF or other GDAL raster."
        ) from None
    return src


def _parse_bands(spec: str, src: rasterio.DatasetReader) -> list[int]:
    names = [d.lower() if d else "" for d in src.descriptions]
    bands: list[int] = []
    for token in (t.strip() for t in spec.split(",") if t.strip()):
        if token.isdigit():
            index = int(token)
            if not 1 <= index <= src.count:
                raise UserError(
                    f"Band {index} does not exist; the input has bands 1 to {src.count}."
                )
            bands.append(index)
        elif token.lower() in names:
            bands.append(names.index(token.lower()) + 1)
        else:
            raise UserError(
                f"Band '{token}' is neither a 1-based band number nor a band description "
                f"of the input ({', '.join(d or '-' for d in src.descriptions)})."
            )
    return bands


def band_mismatch_message(
    src: rasterio.DatasetReader, usable: int, expected: int, band_names: list[str],
    alpha: int | None,
) -> str:
    """One sentence for a band-count mismatch, suggesting only ``--bands`` that can work."""
    name = source_name(src.name)
    wanted = f"{expected} ({', '.join(band_names)})"
    choosable = [b for b in range(1, src.count + 1) if b != alpha] or list(range(1, src.count + 1))
    if src.count < expected:
        return (
            f"'{name}' has {src.count} band(s) but the model expects {wanted}; predict a raster "
            f"with those {expected} bands (--bands can only choose among the input's own bands)."
        )
    order = choosable + [b for b in range(1, src.count + 1) if b not in choosable]
    example = ",".join(str(b) for b in order[:expected])
    return (
        f"'{name}' has {usable} usable band(s) but the model expects {wanted}; pass --bands "
        f"with {expected} of its band numbers 1 to {src.count} in the model's order, e.g. "
        f"--bands {example}."
    )


def select_bands(
    src: rasterio.DatasetReader, expected: int, band_names: list[str], spec: str | None
) -> tuple[list[int], int | None]:
    """Choose the model's input bands and the alpha band used as mask.

    Args:
        src: open raster.
        expected: number of bands the model takes.
        band_names: names of the model's bands (``meta.bands``), matched against band
            descriptions when the input has more bands than the model.
        spec: ``--bands`` value: comma-separated 1-based numbers or descriptions.

    Returns:
        1-based band indexes in model order, and the alpha band (or ``None``).

    Raises:
        UserError: band-count mismatch or unknown band.

    """
    alphas = [i + 1 for i, ci in enumerate(src.colorinterp) if ci == ColorInterp.alpha]
    alpha = alphas[0] if alphas else None
    if spec:
        bands = _parse_bands(spec, src)
    else:
        data = [b for b in range(1, src.count + 1) if b != alpha]
        names = [d.lower() if d else "" for d in src.descriptions]
        wanted = [n.lower() for n in band_names]
        if len(data) != expected and wanted and all(w in names for w in wanted):
            data = [names.index(w) + 1 for w in wanted]
        bands = data
    if len(bands) != expected:
        raise UserError(band_mismatch_message(src, len(bands), expected, band_names, alpha))
    if alpha is not None and alpha in bands:
        warnings.warn(
            f"Band {alpha} of '{source_name(src.name)}' is flagged as alpha but selected as model "
            "input; it is used as data, not as a nodata mask.",
            stacklevel=2,
        )
        alpha = None
    return bands, alpha


def read_aoi(path: str | Path, crs: rasterio.crs.CRS | None) -> list:
    """Read AOI polygons with geopandas, reprojected to the raster CRS.

    Raises:
        UserError: unreadable file, no polygons.

    """
    import geopandas as gpd

    path = Path(path)
    try:
        frame = gpd.read_file(path)
    except Exception as exc:
        raise UserError(
            f"AOI file '{path}' could not be read ({type(exc).__name__}); pass a GeoPackage, "
            "Shapefile or GeoJSON with polygons."
        ) from None
    frame = frame[frame.geometry.notna() & ~frame.geometry.is_empty]
    frame = frame[frame.geom_type.isin(["Polygon", "MultiPolygon"])]
    if frame.empty:
        raise UserError(f"AOI file '{path}' holds no polygons; draw the area as polygons.")
    if crs is not None and frame.crs is not None and frame.crs != crs:
        frame = frame.to_crs(crs)
    return list(frame.geometry)


def open_input(
    path: str | Path,
    expected_bands: int,
    band_names: list[str],
    bands: str | None = None,
    aoi: str | Path | None = None,
) -> RasterInput:
    """Open an inference input and work out its bands, masks and AOI.

    Raises:
        UserError: unreadable raster, band mismatch, AOI not overlapping the raster.

    """
    src = open_raster(path)
    try:
        indexes, alpha = select_bands(src, expected_bands, band_names, bands)
        flags = src.mask_flag_enums[indexes[0] - 1]
        internal = (
            alpha is None and MaskFlags.per_dataset in flags and MaskFlags.alpha not in flags
        )
        nodata = [src.nodatavals[b - 1] for b in indexes]
        shapes = None
        if aoi is not None:
            shapes = read_aoi(aoi, src.crs)
            from shapely.ops import unary_union

            if not unary_union(shapes).intersects(_footprint(src)):
                raise UserError(
                    f"AOI '{Path(aoi).name}' does not overlap '{source_name(path)}'; "
                    "pass an AOI that covers part of the raster (same area, any CRS)."
                )
        return RasterInput(path if is_gdal_path(path) else Path(path), src, indexes, alpha,
                           internal, nodata, shapes)
    except BaseException:
        src.close()
        raise


def _footprint(src: rasterio.DatasetReader):  # noqa: ANN202 - shapely geometry
    from shapely.geometry import Polygon

    t, w, h = src.transform, src.width, src.height
    return Polygon([t * (0, 0), t * (w, 0), t * (w, h), t * (0, h)])
