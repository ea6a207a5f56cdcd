"""The QGIS plugin object: registers the semimtl-geo Processing provider."""

from qgis.core import QgsApplication

from .provider import SemimtlGeoProvider


class SemimtlGeoPlugin:
    """Adds the provider at start-up (``initProcessing`` also runs in ``qgis_process``)."""

    def __init__(self, iface=None) -> None:
        self.iface = iface
        self.provider: SemimtlGeoProvider | None = None

    def initProcessing(self) -> None:  # noqa: N802 - QGIS hook name
        """Register the provider with the Processing registry."""
        if self.provider is None:
            self.provider = SemimtlGeoProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:  # noqa: N802 - QGIS hook name
        """Desktop start-up: the algorithms live in the Processing toolbox only."""
        self.initProcessing()

    def unload(self) -> None:
        """Remove the provider when the plugin is disabled."""
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
