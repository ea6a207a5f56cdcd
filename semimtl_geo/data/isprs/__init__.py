"""ISPRS 2D semantic labelling (Potsdam, Vaihingen): everything about the dataset here.

* :mod:`.facts` -- tile ids, splits, archive names, bands, GSD, CRS, the class table
  (re-exported here: ``from semimtl_geo.data import isprs; isprs.CLASSES``);
* :mod:`.archives` -- finding the files in the downloads (folders, zips, zips in zips);
* :mod:`.prepare` -- ``semimtl-geo prepare-isprs``: per-tile GeoTIFFs and the manifest;
* :mod:`.dataset` -- torchgeo ``RasterDataset`` layers of the prepared tiles;
* :mod:`.samplers` -- random training crops and the edge-aligned evaluation grid;
* :mod:`.loaders` -- training and evaluation data loaders built from the manifest;
* :mod:`.datamodule` -- the ``isprs`` training datamodule (batches and evaluation tiles);
* :mod:`.synthesize` -- ``semimtl-geo synthesize-isprs``: synthetic archives with the real
  names, formats and grids.

Importing this package loads only the facts; the other modules (rasterio, torchgeo) load
when imported.
"""

from semimtl_geo.data.isprs.facts import *  # noqa: F403 - the package's public facts
from semimtl_geo.data.isprs.facts import __all__ as __all__  # noqa: PLC0414
