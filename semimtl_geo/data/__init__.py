"""Datasets, samplers, ISPRS preparation and synthetic archives."""

# ISPRS loaders, re-exported lazily so `import semimtl_geo.data.<module>` stays light
# (torchgeo is only imported when one of these names is used).
_ISPRS_EXPORTS = {
    "read_manifest", "dataset_info", "make_isprs_train_loader", "make_isprs_grid_loader",
    "list_isprs_tiles", "read_isprs_tile", "TileRecord", "TileArrays", "ISPRSInfo",
    "isprs_geodataset",
}


def __getattr__(name: str):
    if name in _ISPRS_EXPORTS:
        from semimtl_geo.data.isprs import loaders

        return getattr(loaders, name)
    raise AttributeError(f"module 'semimtl_geo.data' has no attribute {name!r}")
