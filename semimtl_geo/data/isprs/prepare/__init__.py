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

One job per module:

* :mod:`.jobs` -- options, the per-tile job and result records;
* :mod:`.discovery` -- finding each tile's ortho, label and nDSM in the downloads and
  pairing them into jobs;
* :mod:`.labels` -- label colours -> class ids;
* :mod:`.ndsm` -- nDSM grey levels -> normalised heights on the ortho's grid;
* :mod:`.rasters` -- reading sources, resampling, writing GeoTIFFs;
* :mod:`.tile` -- one tile: read, check, resample, write, its manifest record;
* :mod:`.summary` -- band statistics, patch counts, the manifest entry of a dataset;
* :mod:`.preview` -- ``OUT/<dataset>/preview.png``;
* :mod:`.driver` -- :func:`prepare_isprs`, the whole run.
"""

from semimtl_geo.data.isprs.manifest import MANIFEST_NAME, read_manifest_file
from semimtl_geo.data.isprs.prepare.driver import prepare_isprs
from semimtl_geo.data.isprs.prepare.jobs import PrepareOptions, PrepareReport, TileJob, TileResult
from semimtl_geo.data.isprs.prepare.labels import colors_to_classes
from semimtl_geo.data.isprs.prepare.rasters import local_vaihingen_transform
from semimtl_geo.data.isprs.prepare.summary import band_stats, patch_count
from semimtl_geo.data.isprs.prepare.tile import output_paths, prepare_tile

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
