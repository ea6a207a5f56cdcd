"""Processing provider "semimtl-geo" and its settings (Options > Processing > Providers)."""

import os

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .algorithms import ALGORITHMS
from .runner import CLI_ENV_VAR
from .settings import CLI_SETTING, migrate_legacy_setting, processing_config

PROVIDER_ID = "semimtl-geo"
PROVIDER_NAME = "semimtl-geo"


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
        config, setting = processing_config()
        if config is not None:
            config.settingIcons[self.name()] = self.icon()
            config.addSetting(setting(
                self.name(), CLI_SETTING,
                f"semimtl-geo executable (empty: ${CLI_ENV_VAR}, the install record, PATH)",
                "", valuetype=setting.FILE,
            ))
            migrate_legacy_setting()
            config.readSettings()
        self.refreshAlgorithms()
        return True

    def unload(self) -> None:
        """Remove the setting again."""
        config, _ = processing_config()
        if config is not None:
            config.removeSetting(CLI_SETTING)

    def loadAlgorithms(self) -> None:  # noqa: N802 - QGIS API
        """Add one instance of each algorithm."""
        for algorithm in ALGORITHMS:
            self.addAlgorithm(algorithm())
