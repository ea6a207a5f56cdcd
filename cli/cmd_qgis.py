"""``semimtl-geo qgis-plugin install|zip``: ship the QGIS Processing plugin.

The plugin source is ``semimtl_geo/qgis_plugin/``; it is installed as the QGIS plugin
folder ``semimtl_geo_qgis`` (a name that cannot shadow this package inside QGIS).
"""

import json
import os
import re
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

import click

from semimtl_geo import __version__
from semimtl_geo.errors import UserError

PLUGIN_FOLDER = "semimtl_geo_qgis"
INSTALL_CONFIG = "semimtl_cli.json"  # same name as semimtl_geo.qgis_plugin.runner


def _package_plugin() -> Path:
    """Folder holding the plugin files inside the installed package."""
    import semimtl_geo

    return Path(semimtl_geo.__file__).resolve().parent / "qgis_plugin"


def plugin_files() -> list[Path]:
    """Plugin files to ship (no caches), relative to :func:`plugin_source`."""
    root = _package_plugin()
    if not (root / "metadata.txt").is_file():
        raise UserError(f"The QGIS plugin files are missing from {root}; reinstall semimtl-geo.")
    return sorted(
        p.relative_to(root) for p in root.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo")
    )


def default_profile_dir() -> Path:
    """QGIS 3's default user profile folder on this platform."""
    if sys.platform == "win32":
        base = Path(os.environ.get("APPDATA", Path.home() / "AppData" / "Roaming"))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share"))
    return base / "QGIS" / "QGIS3" / "profiles" / "default"


def current_cli() -> str | None:
    """Return the ``semimtl-geo`` executable of the environment running this command."""
    bindir = Path(sys.executable).parent
    for name in ("semimtl-geo", "semimtl-geo.exe"):
        if (bindir / name).is_file():
            return str(bindir / name)
    return shutil.which("semimtl-geo")


def check_cli(cli: str) -> str:
    """Return the absolute path of the ``--cli`` executable.

    Raises:
        UserError: no such executable file (as a path or on PATH).

    """
    path = Path(cli).expanduser()
    if path.is_file() and os.access(path, os.X_OK):
        return str(path.resolve())
    found = shutil.which(cli) if os.sep not in cli else None
    if found:
        return found
    raise UserError(
        f"--cli '{cli}' is not an executable file; pass the semimtl-geo executable of the "
        "environment QGIS should run (e.g. /path/to/.venv/bin/semimtl-geo)."
    )


def _stage(target_parent: Path, cli: str | None) -> Path:
    """Copy the plugin into a fresh hidden folder under ``target_parent``."""
    root = _package_plugin()
    stage = Path(tempfile.mkdtemp(prefix=f".{PLUGIN_FOLDER}.", dir=target_parent))
    stage.chmod(0o755)  # mkdtemp makes it private; QGIS may run as another user
    for rel in plugin_files():
        (stage / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, stage / rel)
    metadata = stage / "metadata.txt"  # the plugin's version follows the package's
    metadata.write_text(
        re.sub(r"(?m)^version=.*$", f"version={__version__}", metadata.read_text(encoding="utf-8")),
        encoding="utf-8",
    )
    if cli:
        record = {"cli": cli, "python": sys.executable, "version": __version__}
        (stage / INSTALL_CONFIG).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return stage


def install_plugin(profile_dir: Path, cli: str | None) -> Path:
    """Install (or replace) the plugin in ``profile_dir/python/plugins``; returns its folder."""
    plugins = profile_dir / "python" / "plugins"
    plugins.mkdir(parents=True, exist_ok=True)
    target = plugins / PLUGIN_FOLDER
    stage = _stage(plugins, cli)
    old = None
    try:
        if target.exists():
            old = plugins / f".{PLUGIN_FOLDER}.old"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
        os.replace(stage, target)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        if old is not None and old.exists() and not target.exists():
            os.replace(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return target


def zip_plugin(out: Path, cli: str | None = None) -> Path:
    """Write a ZIP for QGIS's "Install from ZIP" (top folder ``semimtl_geo_qgis/``)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        stage = _stage(Path(tmp), cli)
        fd, partial = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
        os.close(fd)
        try:
            with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as archive:
                for path in sorted(stage.rglob("*")):
                    if path.is_file():
                        archive.write(path, f"{PLUGIN_FOLDER}/{path.relative_to(stage).as_posix()}")
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(partial, 0o666 & ~umask)  # mkstemp creates 0600
            os.replace(partial, out)
        except BaseException:
            Path(partial).unlink(missing_ok=True)
            raise
    return out


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
