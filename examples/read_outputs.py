"""Read prediction outputs with rasterio and geopandas: areas, heights, tall buildings.

What it shows, for every ``<stem>_class.tif`` in a folder written by ``predict_folder.py``
(or ``semimtl-geo predict``):

* the class raster is plain uint8 GeoTIFF: class ids, nodata 255, the class names as JSON
  in the ``CLASS_NAMES`` tag and their colours in the colour table; the area of each class
  is its pixel count times the pixel area ``|det(transform)|`` (m² in a projected CRS);
* the height raster ``<stem>_height.tif`` is float32 metres with nodata -9999 on the same
  grid, so a masked read gives the mean height of each class;
* the ``--vectorize`` GeoPackage ``<stem>_classes.gpkg`` holds one polygon per connected
  region with ``class_name``, ``area_m2``, ``height_mean`` and ``height_max``, so a
  one-line geopandas filter finds e.g. the buildings taller than ``--min-height`` metres.

Run it on the predictions of ``predict_folder.py``::

    .venv/bin/python examples/read_outputs.py runs/example/predict --min-height 6

It only reads files; the summary is printed (and returned by :func:`main` as a dict).
"""

import argparse
import json
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line flags: the prediction folder and the building query."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("folder", type=Path, help="folder holding <stem>_class.tif files")
    p.add_argument("--min-height", type=float, default=3.0,
                   help="report polygons of --class with a mean height above this (metres)")
    p.add_argument("--class", dest="class_name", default="building",
                   help="class name queried in the GeoPackage")
    return p.parse_args(argv)


def class_summary(class_tif: Path, height_tif: Path | None) -> list[dict]:
    """Per class: name, colour, pixels, area (m²) and mean predicted height (metres).

    Args:
        class_tif: ``<stem>_class.tif``.
        height_tif: ``<stem>_height.tif`` on the same grid, or None.

    Returns:
        One dict per class of the table (classes absent from the raster have 0 pixels).

    """
    with rasterio.open(class_tif) as src:
        names = json.loads(src.tags(1)["CLASS_NAMES"])
        colormap = src.colormap(1)  # {id: (r, g, b, a)}
        classes = src.read(1, masked=True)  # nodata 255 masked
        # Pixel area in CRS units²; metres² for a projected CRS in metres (UTM).
        unit_m = src.crs.linear_units_factor[1] if src.crs and src.crs.is_projected else None
        pixel_area = abs(src.transform.determinant) * (unit_m**2 if unit_m else np.nan)
    heights = None
    if height_tif is not None and height_tif.is_file():
        with rasterio.open(height_tif) as src:
            heights = src.read(1, masked=True)  # nodata -9999 masked
    rows = []
    for cid, name in enumerate(names):
        inside = (classes == cid).filled(False)
        count = int(inside.sum())
        mean_h = float("nan")
        if heights is not None and count:
            values = heights[inside]
            if values.count():
                mean_h = float(values.mean())
        rows.append({"class_id": cid, "class_name": name,
                     "color": "#{:02x}{:02x}{:02x}".format(*colormap[cid][:3]),
                     "pixels": count, "area_m2": count * pixel_area, "height_mean": mean_h})
    return rows


def tall_objects(gpkg: Path, class_name: str, min_height: float) -> gpd.GeoDataFrame:
    """Polygons of ``class_name`` whose mean predicted height exceeds ``min_height`` m."""
    frame = gpd.read_file(gpkg)
    tall = frame[(frame["class_name"] == class_name) & (frame["height_mean"] > min_height)]
    return tall.sort_values("height_mean", ascending=False)


def main(argv: list[str] | None = None) -> dict:
    """Print a summary of every prediction in the folder; return it as a dict."""
    args = parse_args(argv)
    class_tifs = sorted(args.folder.glob("*_class.tif"))
    if not class_tifs:
        print(f"Error: no *_class.tif in '{args.folder}'; run predict_folder.py first.",
              file=sys.stderr)
        raise SystemExit(1)
    summary: dict[str, dict] = {}
    for class_tif in class_tifs:
        stem = class_tif.name.removesuffix("_class.tif")
        height_tif = class_tif.with_name(f"{stem}_height.tif")
        rows = class_summary(class_tif, height_tif)
        print(f"\n{stem}")
        print(f"  {'class':<22}{'colour':>9}{'area m²':>12}{'share':>8}{'mean h (m)':>12}")
        total = sum(r["pixels"] for r in rows) or 1
        for r in rows:
            print(f"  {r['class_name']:<22}{r['color']:>9}{r['area_m2']:>12.1f}"
                  f"{100 * r['pixels'] / total:>7.1f}%{r['height_mean']:>12.2f}")
        entry: dict = {"classes": rows}
        gpkg = class_tif.with_name(f"{stem}_classes.gpkg")
        if gpkg.is_file():
            tall = tall_objects(gpkg, args.class_name, args.min_height)
            entry["tall"] = {"count": len(tall), "area_m2": float(tall["area_m2"].sum()),
                             "max_height": float(tall["height_max"].max()) if len(tall) else None}
            print(f"  {len(tall)} {args.class_name} polygon(s) with mean height > "
                  f"{args.min_height:g} m, {entry['tall']['area_m2']:.1f} m² in all")
            for _, obj in tall.head(3).iterrows():
                x, y = obj.geometry.representative_point().coords[0]
                print(f"    {obj['area_m2']:8.1f} m², mean {obj['height_mean']:5.1f} m, "
                      f"max {obj['height_max']:5.1f} m at ({x:.1f}, {y:.1f})")
        else:
            print("  (no GeoPackage: predict with --vectorize to get polygons)")
        summary[stem] = entry
    return summary


if __name__ == "__main__":
    main()
