"""QGIS Processing plugin for semimtl-geo (installed by ``semimtl-geo qgis-plugin install``).

This folder is copied as a plugin named ``semimtl_geo_qgis`` into a QGIS profile. It runs
inside QGIS's own Python, which has neither torch nor semimtl-geo: it only imports
``qgis`` and the standard library, and runs the ``semimtl-geo`` command line of a
configured environment as a subprocess (see :mod:`.runner`). Nothing here is imported by
the semimtl_geo library itself.
"""


def classFactory(iface):  # noqa: N802 - name required by QGIS
    """QGIS entry point: build the plugin object (QGIS imports this package first)."""
    from .plugin import SemimtlGeoPlugin

    return SemimtlGeoPlugin(iface)
