"""Find dataset files wherever a download put them: folders, zips, zips inside a zip.

Users point the tool at the folder holding the archives *as downloaded*: the individual
zips, one outer zip wrapping them (the newer ``Potsdam.zip``), or folders they already
extracted; zips may nest one folder or be flat. :class:`SourceIndex` lists all of these
once and finds files by base name. Files inside zips are read in place through GDAL's
``/vsizip/`` (nested zips with the ``/vsizip/{...}/`` syntax), so nothing is extracted to
disk and only the tile being prepared is ever in memory.
"""

from __future__ import annotations

import os
import zipfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from semimtl_geo.errors import UserError

#: How deep below the given folder extracted files are searched.
MAX_DEPTH = 4


@dataclass(frozen=True)
class SourceFile:
    """One file of a download, on disk or inside (nested) zips.

    Attributes:
        name: base name, e.g. ``top_potsdam_2_10_IRRG.tif``.
        display: human-readable location, e.g. ``Potsdam.zip!Potsdam/3_Ortho_IRRG.zip!...``.
        gdal_path: a path rasterio/GDAL can open (plain path or ``/vsizip/`` path).
        parts: lower-cased path components, zip names included (used to tell apart
            files that share a base name, like Vaihingen tops and their ground truth).
        size: uncompressed size in bytes.

    """

    name: str
    display: str
    gdal_path: str
    parts: tuple[str, ...]
    size: int

    @property
    def parent(self) -> str:
        """Lower-cased name of the folder (or zip) directly holding the file."""
        return self.parts[-2] if len(self.parts) > 1 else ""


class SourceIndex:
    """All files under a download folder, including zip members, indexed by base name.

    Args:
        root: the folder given by the user (or a single zip file).

    Raises:
        UserError: the folder does not exist, or a zip in it is corrupt.

    """

    def __init__(self, root: str | Path):
        self.root = Path(root).absolute()  # /vsizip/ paths must not depend on the cwd
        if not self.root.exists():
            raise UserError(
                f"Folder '{self.root}' does not exist; pass the folder holding the downloaded "
                "archives."
            )
        self.by_name: dict[str, list[SourceFile]] = defaultdict(list)
        self.zips: list[str] = []
        if self.root.is_file():
            self._add_zip_on_disk(self.root, (self.root.name.lower(),))
        else:
            self._walk()

    # -- building -------------------------------------------------------------------------

    def _walk(self) -> None:
        base_depth = len(self.root.parts)
        for dirpath, dirnames, filenames in os.walk(self.root):
            depth = len(Path(dirpath).parts) - base_depth
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            if depth >= MAX_DEPTH:
                dirnames[:] = []
            rel_dir = Path(dirpath).relative_to(self.root)
            for fname in sorted(filenames):
                if fname.startswith("."):
                    continue
                path = Path(dirpath) / fname
                parts = tuple(p.lower() for p in (rel_dir / fname).parts)
                if fname.lower().endswith(".zip"):
                    self._add_zip_on_disk(path, parts)
                else:
                    self._add(SourceFile(fname, str(path), str(path), parts, path.stat().st_size))

    def _add(self, f: SourceFile) -> None:
        self.by_name[f.name].append(f)

    def _add_zip_on_disk(self, path: Path, parts: tuple[str, ...]) -> None:
        try:
            with zipfile.ZipFile(path) as zf:
                self._add_zip_members(zf, f"/vsizip/{path}", str(path), parts, nested=True)
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise UserError(
                f"'{path}' is not a readable zip archive ({exc}); the download is corrupt or "
                "incomplete, so download it again."
            ) from None
        self.zips.append(str(path))

    def _add_zip_members(self, zf: zipfile.ZipFile, vsi_prefix: str, display: str,
                         parts: tuple[str, ...], nested: bool) -> None:
        for info in zf.infolist():
            if info.is_dir() or Path(info.filename).name.startswith("."):
                continue
            inner = info.filename
            inner_parts = parts + tuple(p.lower() for p in inner.split("/") if p)
            name = Path(inner).name
            if name.lower().endswith(".zip") and nested:
                # A zip inside a zip (Potsdam.zip wraps the individual archives).
                try:
                    with zf.open(info) as fh, zipfile.ZipFile(fh) as inner_zf:
                        self._add_zip_members(
                            inner_zf, f"/vsizip/{{{vsi_prefix}/{inner}}}", f"{display}!{inner}",
                            inner_parts, nested=False,
                        )
                except (zipfile.BadZipFile, OSError, EOFError) as exc:
                    raise UserError(
                        f"'{display}!{inner}' is not a readable zip archive ({exc}); the download "
                        "is corrupt or incomplete, so download it again."
                    ) from None
                self.zips.append(f"{display}!{inner}")
                continue
            self._add(SourceFile(name, f"{display}!{inner}", f"{vsi_prefix}/{inner}",
                                 inner_parts, info.file_size))

    # -- queries --------------------------------------------------------------------------

    def find(self, name: str) -> list[SourceFile]:
        """All files with this base name, plain files first (they read fastest)."""
        found = self.by_name.get(name, [])
        return sorted(found, key=lambda f: (f.gdal_path.startswith("/vsi"), f.display))

    def names(self) -> list[str]:
        """All base names seen."""
        return sorted(self.by_name)
