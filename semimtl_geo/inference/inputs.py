"""Which files a ``predict`` input argument stands for: files, folders and glob patterns.

A file named on the command line is taken as it is (a bad one fails with its own
sentence), and so are GDAL paths and URLs (:mod:`semimtl_geo.inference.sources`).
Folders (their files, not subfolders) and glob patterns take only:

* rasters GDAL opens (``.txt``, ``.xml``, world files and the like are skipped);
* files that are not semimtl-geo outputs: names ending like ``predict``'s outputs
  (``_class.tif``, ``_height.tif``, ``_preview.png`` ...), and rasters or PNGs whose
  metadata names semimtl-geo as their software (previews, panels, renamed outputs), so
  predicting a folder into itself never predicts its own results;
* no hidden files, GDAL sidecars (``.aux.xml``, ``.ovr``, ``.msk``) or styles.

What a folder or pattern skipped is reported in one line (:meth:`InputSelection.skipped_line`).
"""

import glob
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import rasterio
from rasterio.errors import RasterioError

from semimtl_geo.inference.publish import OUTPUT_SUFFIXES
from semimtl_geo.inference.sources import is_gdal_path, to_gdal_path
from semimtl_geo.outputs import is_own_software

#: Sidecar files GDAL writes or reads next to rasters (some of them open as rasters).
SIDECAR_SUFFIXES = (".aux.xml", ".ovr", ".msk", ".qml", ".qmd", ".tfw", ".tifw", ".wld",
                    ".prj", ".jgw", ".pgw", ".xml", ".json", ".gpkg")


@dataclass
class InputSelection:
    """Files to predict, one sentence per argument that gave none, and what was skipped."""

    files: list[Path | str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)

    def skipped_line(self, limit: int = 50) -> str | None:
        """One line naming the skipped files (``None`` when nothing was skipped)."""
        if not self.skipped:
            return None
        names = [p.name for p in self.skipped]
        shown = ", ".join(names[:limit]) + (f" and {len(names) - limit} more"
                                            if len(names) > limit else "")
        return (f"Skipped {len(names)} file(s) that are not rasters GDAL opens or are "
                f"semimtl-geo outputs: {shown}.")


def is_own_output(path: Path) -> bool:
    """Tell whether ``path`` is named like an output of ``predict``."""
    name = path.name.lower()
    return any(name.endswith(s) for s in OUTPUT_SUFFIXES)


def _opens_as_raster(path: Path) -> tuple[bool, bool]:
    """``(GDAL opens it, its metadata names semimtl-geo)``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # NotGeoreferencedWarning for plain pictures
            with rasterio.open(path) as src:
                tags = src.tags()
                software = tags.get("TIFFTAG_SOFTWARE") or tags.get("Software") or ""
                return src.count > 0, is_own_software(software)
    except (RasterioError, OSError, ValueError):
        return False, False


def _select(candidates: list[Path], selection: InputSelection) -> list[Path]:
    taken: list[Path] = []
    for path in candidates:
        name = path.name.lower()
        if name.startswith("."):
            continue  # hidden: staging folders, editor files, .DS_Store
        if any(name.endswith(s) for s in SIDECAR_SUFFIXES) or is_own_output(path):
            selection.skipped.append(path)
            continue
        opens, ours = _opens_as_raster(path)
        if not opens or ours:
            selection.skipped.append(path)
            continue
        taken.append(path)
    return taken


def expand_inputs(items: tuple[str, ...] | list[str]) -> InputSelection:
    """Files from paths, folders (their rasters, sorted) and glob patterns.

    Returns:
        The input files (unique, in order), one sentence per argument that matched
        nothing, and the files folders and patterns skipped.

    """
    selection = InputSelection()
    files: list[Path | str] = []
    for item in items:
        if is_gdal_path(item):  # remote or virtual: taken as it is, never expanded
            files.append(to_gdal_path(item))
            continue
        path = Path(item)
        if path.is_dir():
            found = _select(sorted(p for p in path.iterdir() if p.is_file()), selection)
            if not found:
                selection.problems.append(
                    f"Folder '{item}' holds no raster files GDAL can open (.tif, .vrt, .jp2...) "
                    "other than semimtl-geo outputs."
                )
            files.extend(found)
        elif path.exists():
            files.append(path)
        elif glob.has_magic(item):
            matches = sorted(Path(p) for p in glob.glob(item, recursive=True) if Path(p).is_file())
            found = _select(matches, selection)
            if not found:
                selection.problems.append(
                    f"Pattern '{item}' matches no raster file GDAL can open"
                    + (" other than semimtl-geo outputs." if matches else ".")
                )
            files.extend(found)
        else:
            selection.problems.append(f"Input '{item}' does not exist; check the path.")
    seen: set[Path | str] = set()
    for f in files:
        key = f.resolve() if isinstance(f, Path) else f
        if key not in seen:
            seen.add(key)
            selection.files.append(f)
    return selection
