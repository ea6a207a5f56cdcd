"""Install the QGIS Processing plugin into a QGIS profile, or package it as a ZIP.

The plugin source is ``semimtl_geo/qgis_plugin/`` (it imports nothing of this package);
it is installed as the QGIS plugin folder ``semimtl_geo_qgis``, a name that cannot shadow
this package inside QGIS. Both outputs are written atomically (:mod:`semimtl_geo.atomic`):
a profile holds the old plugin or the new one, never a mix; a ZIP is complete or absent.
"""

import json
import os
import re
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

from semimtl_geo import __version__
from semimtl_geo.atomic import atomic_dir, atomic_output
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


def _fill(stage: Path, cli: str | None) -> Path:
    """Copy the plugin files into ``stage``, versioned, with the CLI record if any."""
    root = _package_plugin()
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
    target = profile_dir / "python" / "plugins" / PLUGIN_FOLDER
    with atomic_dir(target) as stage:
        _fill(stage, cli)
    return target


def zip_plugin(out: Path, cli: str | None = None) -> Path:
    """Write a ZIP for QGIS's "Install from ZIP" (top folder ``semimtl_geo_qgis/``)."""
    with tempfile.TemporaryDirectory() as tmp, atomic_output(out) as partial:
        stage = _fill(Path(tmp), cli)
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(stage.rglob("*")):
                if path.is_file():
                    archive.write(path, f"{PLUGIN_FOLDER}/{path.relative_to(stage).as_posix()}")
    return out
