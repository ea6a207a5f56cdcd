"""Processing provider "semimtl-geo" and its settings (Options > Processing > Providers)."""

import os

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

PROVIDER_ID = "semimtl-geo"
PROVIDER_NAME = "semimtl-geo"
#: Processing setting holding the path of the ``semimtl-geo`` executable.
CLI_SETTING = "SEMIMTL_GEO_CLI"


def _processing_config():
    """Return Processing's Python settings classes (absent in a bare PyQGIS application)."""
    try:
        from processing.core.ProcessingConfig import ProcessingConfig, Setting
    except ImportError:
        return None, None
    return ProcessingConfig, Setting


def cli_setting() -> str | None:
    """Path of the CLI set in Processing's options, or None."""
    config, _ = _processing_config()
    if config is None:
        return None
    value = config.getSetting(CLI_SETTING)
    return str(value) if value else None


class SemimtlGeoProvider(QgsProcessingProvider):
    """Algorithms that run the semimtl-geo command line of a configured environment."""

    def id(self) -> str:
        """Return the id used in algorithm ids, e.g. ``semimtl-geo:predict``."""
        return PROVIDER_ID

    def name(self) -> str:
        """Name shown in the Processing toolbox."""
        return PROVIDER_NAME

    def longName(self) -> str:  # noqa: N802 - QGIS API
        """Name with version, shown in the provider options."""
        return "semimtl-geo (SemiMTL class and height prediction)"

    def icon(self) -> QIcon:
        """Return the provider icon."""
        return QIcon(os.path.join(os.path.dirname(__file__), "icon.svg"))

    def load(self) -> bool:
        """Register the CLI-path setting, then the algorithms."""
        config, setting = _processing_config()
        if config is not None:
            config.settingIcons[self.name()] = self.icon()
            config.addSetting(setting(
                self.name(), CLI_SETTING,
                "semimtl-geo executable (empty: $SEMIMTL_GEO_CLI, the install record, PATH)",
                "", valuetype=setting.FILE,
            ))
            config.readSettings()
        self.refreshAlgorithms()
        return True

    def unload(self) -> None:
        """Remove the setting again."""
        config, _ = _processing_config()
        if config is not None:
            config.removeSetting(CLI_SETTING)

    def loadAlgorithms(self) -> None:  # noqa: N802 - QGIS API
        """Add one instance of each algorithm."""
        from .algorithms import ALGORITHMS

        for algorithm in ALGORITHMS:
            self.addAlgorithm(algorithm())
