"""``semimtl-geo qgis-plugin install|zip``: ship the QGIS Processing plugin.

The work is done by :mod:`semimtl_geo.qgis_install`; this module parses and reports.
"""

from pathlib import Path

import click

from semimtl_geo.errors import UserError
from semimtl_geo.qgis_install import (
    PLUGIN_FOLDER,
    check_cli,
    current_cli,
    default_profile_dir,
    install_plugin,
    zip_plugin,
)


@click.group("qgis-plugin")
def qgis_plugin() -> None:
    """Install or package the QGIS Processing plugin (provider "semimtl-geo")."""


@qgis_plugin.command("install")
@click.option(
    "--profile-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="QGIS profile folder (default: this platform's 'default' profile).",
)
@click.option(
    "--cli", "cli", default=None,
    help="semimtl-geo executable the plugin runs (default: the one of this environment).",
)
def install_cmd(profile_dir: Path | None, cli: str | None) -> None:
    """Install the plugin into a QGIS profile, remembering this environment's CLI."""
    from semimtl_geo.outputs import check_output_dir

    if profile_dir is not None and not profile_dir.is_dir():
        raise UserError(
            f"QGIS profile folder '{profile_dir}' does not exist; pass an existing profile "
            "(QGIS > Settings > User Profiles > Open Active Profile Folder) or leave out "
            "--profile-dir for the default one."
        )
    profile = profile_dir or default_profile_dir()
    check_output_dir(profile / "python" / "plugins", "QGIS plugins folder")
    cli = check_cli(cli) if cli else current_cli()
    target = install_plugin(profile, cli)
    click.echo(f"Installed the QGIS plugin in {target}")
    click.echo(f"It runs: {cli or 'semimtl-geo from PATH (none recorded)'}")
    click.echo(
        "Restart QGIS and enable 'semimtl-geo' in Plugins > Manage and Install Plugins "
        f"(headless: qgis_process plugins enable {PLUGIN_FOLDER})."
    )


@qgis_plugin.command("zip")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="ZIP file to write.")
@click.option("--cli", "cli", default=None,
              help="Record this semimtl-geo executable in the ZIP (default: none recorded).")
def zip_cmd(output: Path, cli: str | None) -> None:
    """Write the plugin as a ZIP for QGIS's Plugins > Install from ZIP."""
    from semimtl_geo.outputs import check_output_file

    check_output_file(output, "ZIP file")
    click.echo(f"Wrote {zip_plugin(output, cli)}")


COMMANDS = [qgis_plugin]
