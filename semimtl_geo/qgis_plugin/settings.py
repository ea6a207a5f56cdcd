"""The plugin's Processing setting: which ``semimtl-geo`` executable to run.

Shared by the provider (which registers the setting) and the algorithms (which read it),
so that neither imports the other's module.
"""

#: Processing setting (Options > Processing > Providers) holding the path of the
#: ``semimtl-geo`` executable; the same name as the environment variable
#: (:data:`.runner.CLI_ENV_VAR`) that plays the same role outside QGIS's settings.
CLI_SETTING = "SEMIMTL_GEO_CLI"


def processing_config():  # noqa: ANN201 - QGIS classes, absent outside QGIS
    """Return Processing's Python settings classes (``None, None`` in bare PyQGIS)."""
    try:
        from processing.core.ProcessingConfig import ProcessingConfig, Setting
    except ImportError:
        return None, None
    return ProcessingConfig, Setting


def cli_setting() -> str | None:
    """Path of the CLI set in Processing's options, or None."""
    config, _ = processing_config()
    if config is None:
        return None
    value = config.getSetting(CLI_SETTING)
    return str(value) if value else None
