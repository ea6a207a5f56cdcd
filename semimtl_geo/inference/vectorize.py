"""Polygons per class from a class raster, with area and height statistics.

``rasterio.features.shapes`` turns each 4-connected region of one class into a polygon
(pixel-edge outlines, holes kept). The class raster is processed in strips of rows so
memory stays bounded on large mosaics; regions cut by a strip border are stitched back
together (a union-find over pixel pairs that touch across the border), their geometries
unioned and their statistics combined. Each polygon gets:

* ``class_id``, ``class_name``;
* ``pixels`` and ``area_m2`` (pixel count x pixel area; for geographic CRSs the
  geodesic area on the CRS's ellipsoid, exact anywhere on Earth, poles and the
  antimeridian included; empty without a CRS);
* ``height_mean`` and ``height_max`` in the height raster's unit (for 3-D extrusion in
  QGIS), empty when no height raster is given.
"""

import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import rasterio
from rasterio.features import rasterize, shapes
from rasterio.windows import Window

from semimtl_geo.atomic import atomic_output
from semimtl_geo.classes import IGNORE_INDEX, ClassTable


class _UnionFind:
    def __init__(self) -> None:
        self.parent: list[int] = []

    def add(self) -> int:
        self.parent.append(len(self.parent))
        return len(self.parent) - 1

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


#: Longest polygon edge, in degrees, measured as one geodesic by :func:`geodesic_areas`.
GEODESIC_STEP_DEG = 0.05


def geodesic_areas(geometries: Iterable, crs: rasterio.crs.CRS) -> list[float]:
    """Area in square metres of lon/lat polygons on the ellipsoid of ``crs``.

    A projection (e.g. the UTM zone of the data's centre) distorts polygons far from its
    centre and has no zone near the poles; the geodesic area (pyproj ``Geod``, Karney's
    algorithm) is exact everywhere.
    """
    from pyproj import CRS as ProjCRS
    from pyproj import Geod
    from shapely import segmentize

    geod = ProjCRS.from_user_input(crs.to_wkt()).get_geod() or Geod(ellps="WGS84")
    # Pixel edges follow parallels, geodesics do not: densify long edges (0.05 degrees)
    # so the difference vanishes (0.01 % on a 5-degree global grid).
    return [
        abs(geod.geometry_area_perimeter(segmentize(g, GEODESIC_STEP_DEG))[0])
        for g in geometries
    ]


def vectorize_classes(
    class_path: str | Path,
    out_path: str | Path,
    classes: ClassTable,
    height_path: str | Path | None = None,
    strip_rows: int = 1024,
    layer: str = "classes",
) -> Path:
    """Write a GeoPackage with one polygon per connected class region.

    Args:
        class_path: uint8 class GeoTIFF (255 = nodata).
        out_path: ``.gpkg`` to write (atomically).
        classes: class names (index = pixel value).
        height_path: optional height GeoTIFF on the same grid (nodata honoured).
        strip_rows: rows processed at a time.
        layer: GeoPackage layer name.

    Returns:
        ``out_path``.

    """
    import geopandas as gpd
    from shapely.geometry import shape
    from shapely.ops import unary_union

    out_path = Path(out_path)
    uf = _UnionFind()
    geoms: list = []
    cls_of: list[int] = []
    pix: list[int] = []
    hsum: list[float] = []
    hcnt: list[int] = []
    hmax: list[float] = []
    with rasterio.open(class_path) as src:
        hsrc = rasterio.open(height_path) if height_path is not None else None
        try:
            crs, transform = src.crs, src.transform
            prev_ids: np.ndarray | None = None
            for y0 in range(0, src.height, strip_rows):
                window = Window(0, y0, src.width, min(strip_rows, src.height - y0))
                cls = src.read(1, window=window)
                wt = src.window_transform(window)
                valid = cls != IGNORE_INDEX
                hgt = None
                if hsrc is not None:
                    hm = hsrc.read(1, window=window, masked=True)
                    hgt = hm.filled(np.nan).astype(np.float64)
                ids = np.full(cls.shape, -1, np.int64)
                local: list[tuple[int, object]] = []
                for geom, value in shapes(cls, mask=valid, connectivity=4, transform=wt):
                    gid = uf.add()
                    local.append((gid, geom))
                    geoms.append(shape(geom))
                    cls_of.append(int(value))
                if local:
                    burned = rasterize(
                        [(g, i + 1) for i, (_, g) in enumerate(local)],
                        out_shape=cls.shape, transform=wt, fill=0, dtype="int32",
                    )
                    first = local[0][0]
                    ids = np.where(burned > 0, burned.astype(np.int64) - 1 + first, -1)
                    n = len(local)
                    lid = np.where(burned > 0, burned - 1, n)
                    counts = np.bincount(lid.ravel(), minlength=n + 1)[:n]
                    pix.extend(int(c) for c in counts)
                    if hgt is not None:
                        finite = np.isfinite(hgt) & (burned > 0)
                        sums = np.bincount(lid[finite], weights=hgt[finite], minlength=n)
                        cnts = np.bincount(lid[finite], minlength=n)
                        mx = np.full(n, -np.inf)
                        np.maximum.at(mx, lid[finite], hgt[finite])
                        hsum.extend(sums.tolist())
                        hcnt.extend(cnts.tolist())
                        hmax.extend(mx.tolist())
                    else:
                        hsum.extend([0.0] * n)
                        hcnt.extend([0] * n)
                        hmax.extend([-math.inf] * n)
                if prev_ids is not None:
                    top = ids[0]
                    link = (prev_ids >= 0) & (top >= 0)
                    for a, b in set(zip(prev_ids[link].tolist(), top[link].tolist())):
                        if cls_of[a] == cls_of[b]:
                            uf.union(a, b)
                prev_ids = ids[-1].copy()
        finally:
            if hsrc is not None:
                hsrc.close()
    groups: dict[int, list[int]] = {}
    for i in range(len(geoms)):
        groups.setdefault(uf.find(i), []).append(i)
    pixel_area = abs(transform.determinant)
    metric = crs is not None and crs.is_projected
    factor = crs.linear_units_factor[1] if metric else 1.0
    rows = []
    for members in groups.values():
        geom = geoms[members[0]] if len(members) == 1 else unary_union([geoms[i] for i in members])
        count = sum(pix[i] for i in members)
        n_h = sum(hcnt[i] for i in members)
        cid = cls_of[members[0]]
        rows.append({
            "class_id": cid,
            "class_name": classes.names[cid] if cid < len(classes) else str(cid),
            "pixels": count,
            "area_m2": count * pixel_area * factor**2 if metric else math.nan,
            "height_mean": sum(hsum[i] for i in members) / n_h if n_h else math.nan,
            "height_max": max(hmax[i] for i in members) if n_h else math.nan,
            "geometry": geom,
        })
    columns = ["class_id", "class_name", "pixels", "area_m2", "height_mean", "height_max"]
    frame = gpd.GeoDataFrame(rows, columns=[*columns, "geometry"], geometry="geometry", crs=crs)
    if crs is not None and crs.is_geographic and not frame.empty:
        frame["area_m2"] = geodesic_areas(frame.geometry, crs)
    frame = frame.sort_values(["class_id", "pixels"], ascending=[True, False], kind="stable")
    with atomic_output(out_path, suffix=".partial.gpkg") as tmp:
        tmp.unlink()  # the GPKG driver creates the file itself
        frame.to_file(tmp, layer=layer, driver="GPKG")
    return out_path
