"""The plugin's Processing setting: which ``semimtl-geo`` executable to run.

Shared by the provider (which registers the setting) and the algorithms (which read it),
so that neither imports the other's module.
"""

#: Processing setting (Options > Processing > Providers) holding the path of the
#: ``semimtl-geo`` executable; the same name as the environment variable
#: (:data:`.runner.CLI_ENV_VAR`) that plays the same role outside QGIS's settings.
CLI_SETTING = "SEMIMTL_GEO_EXECUTABLE"
#: The setting's former name; a value saved under it is moved to :data:`CLI_SETTING`.
LEGACY_CLI_SETTING = "SEMIMTL_GEO_CLI"
#: Where Processing keeps its settings in the QGIS profile (``Setting.qname``).
SETTINGS_GROUP = "Processing/Configuration/"


def processing_config():  # noqa: ANN201 - QGIS classes, absent outside QGIS
    """Return Processing's Python settings classes (``None, None`` in bare PyQGIS)."""
    try:
        from processing.core.ProcessingConfig import ProcessingConfig, Setting
    except ImportError:
        return None, None
    return ProcessingConfig, Setting


def migrate_legacy_setting(settings=None) -> None:  # noqa: ANN001 - QgsSettings
    """Move a value saved under :data:`LEGACY_CLI_SETTING` to :data:`CLI_SETTING` (once).

    ``settings`` is a ``QgsSettings`` (default: the user's profile); nothing happens in
    bare PyQGIS without it.
    """
    if settings is None:
        try:
            from qgis.core import QgsSettings
        except ImportError:
            return
        settings = QgsSettings()
    old, new = SETTINGS_GROUP + LEGACY_CLI_SETTING, SETTINGS_GROUP + CLI_SETTING
    value = settings.value(old, None)
    if value is None:
        return
    if value and not settings.value(new, None):
        settings.setValue(new, value)
    settings.remove(old)


def cli_setting() -> str | None:
    """Path of the CLI set in Processing's options, or None."""
    config, _ = processing_config()
    if config is None:
        return None
    value = config.getSetting(CLI_SETTING)
    return str(value) if value else None
