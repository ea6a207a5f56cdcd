"""The typed ``manifest.json`` of a ``prepare-isprs`` output folder.

:func:`semimtl_geo.data.isprs.prepare.prepare_isprs` builds a :class:`Manifest` and
writes it with :meth:`Manifest.to_dict`; the loaders read it back with
:func:`load_manifest`. The JSON layout is unchanged from format 1 (the files written
before this class existed): :meth:`Manifest.from_dict` fills keys an older file lacks
with the defaults below (ignore index 255, 512 px patches at 50 % overlap, metres, the
documented default height scale), so old prepared folders keep working.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from semimtl_geo.classes import ClassTable
from semimtl_geo.data.isprs import facts
from semimtl_geo.errors import UserError

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1


def _known(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """Keys of ``data`` that are fields of the dataclass ``cls`` (newer keys are dropped)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in data.items() if k in names}


@dataclass
class TileEntry:
    """One prepared tile: its files (relative to the folder), grid and provenance.

    Attributes:
        tile_id: official id (``2_10``, ``1``).
        split: ``train`` or ``test`` (the official split).
        name: base name of the prepared files (``potsdam_2_10``).
        image, label, ndsm: prepared GeoTIFFs, relative to the prepared folder.
        width, height: pixels at the target GSD.
        transform: float64 affine ``(a, b, c, d, e, f)`` of the prepared grid.
        crs: CRS of the prepared grid.
        georeferencing: ``source`` or ``local`` (placeholder grid, see the facts).
        patches: evaluation patches of the tile (:func:`semimtl_geo.grid.grid_count`).

    """

    tile_id: str
    split: str
    image: str
    width: int
    height: int
    transform: list[float]
    crs: str | None = None
    name: str = ""
    label: str | None = None
    ndsm: str | None = None
    georeferencing: str = "source"
    source_gsd: float | None = None
    source_shape: list[int] | None = None
    sources: dict[str, str | None] = field(default_factory=dict)
    unknown_colors: dict[str, int] = field(default_factory=dict)
    class_pixels: list[int] = field(default_factory=list)
    ndsm_note: str | None = None
    ndsm_valid_fraction: float | None = None
    ndsm_range: list[float] | None = None
    patches: int = 0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TileEntry:
        """Read one tile record."""
        return cls(**_known(cls, data))


@dataclass
class DatasetEntry:
    """One prepared dataset (Potsdam or Vaihingen).

    Attributes:
        bands: band order of the prepared images.
        gsd: prepared ground sampling distance (metres).
        height_scale: metres per normalised nDSM unit (grey level 255).
        mean, std: per-band statistics on the pixel/255 scale (train split).
        tiles: the tiles prepared without error.
        failed: ``{"tile_id", "error"}`` of the tiles that failed.

    """

    bands: list[str]
    gsd: float
    mean: list[float]
    std: list[float]
    tiles: list[TileEntry] = field(default_factory=list)
    source_root: str = ""
    archives: Any = None
    image_product: str | None = None
    native_gsd: float | None = None
    crs: str | None = None
    georeferencing: str | list[str] = "source"
    labels: str | None = None
    label_file_pattern: str | None = None
    has_labels: bool = True
    has_height: bool = False
    height: dict[str, Any] | None = None
    height_scale: float = facts.DEFAULT_HEIGHT_SCALE
    stats_from: str = "train"
    official_split: dict[str, list[str]] = field(default_factory=dict)
    split: dict[str, list[str]] = field(default_factory=dict)
    patch_counts: dict[str, int] = field(default_factory=dict)
    failed: list[dict[str, str]] = field(default_factory=list)
    local_grid: dict[str, str] | None = None

    @property
    def height_unit(self) -> str:
        """Unit of ``height_scale`` (metres unless the manifest says otherwise)."""
        return (self.height or {}).get("height_unit", "m")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DatasetEntry:
        """Read one dataset entry (its tiles typed)."""
        known = _known(cls, data)
        known["tiles"] = [TileEntry.from_dict(t) for t in data.get("tiles", [])]
        return cls(**known)

    def to_dict(self) -> dict[str, Any]:
        """JSON form: the dataset's facts, then its tiles (``local_grid`` only when set)."""
        out = dataclasses.asdict(self)
        tail = {key: out.pop(key) for key in ("tiles", "failed", "local_grid")}
        if tail["local_grid"] is None:
            del tail["local_grid"]
        return out | tail


@dataclass
class Manifest:
    """``manifest.json``: what was prepared, how, and the facts a model trained on it needs.

    Attributes:
        classes: the class table of the prepared labels.
        ignore_index: label value of ignored (boundary) pixels.
        target_gsd: GSD every dataset was resampled to (``None``: native).
        patch_size, overlap: the evaluation grid the patch counts describe.
        datasets: per dataset name, its entry.

    """

    classes: ClassTable = facts.CLASSES
    ignore_index: int = facts.IGNORE
    target_gsd: float | None = None
    patch_size: int = 512
    overlap: float = 0.5
    datasets: dict[str, DatasetEntry] = field(default_factory=dict)
    format: int = MANIFEST_FORMAT
    tool: str = ""
    created: str = ""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        """Read a manifest mapping; keys an older file lacks take the defaults."""
        known = _known(cls, data)
        if "classes" in data:
            known["classes"] = ClassTable.from_dict(data["classes"])
        known["datasets"] = {
            name: DatasetEntry.from_dict(entry) for name, entry in data.get("datasets", {}).items()
        }
        return cls(**known)

    def to_dict(self) -> dict[str, Any]:
        """JSON form, the layout of format 1."""
        return {
            "format": self.format,
            "tool": self.tool,
            "created": self.created,
            "target_gsd": self.target_gsd,
            "classes": self.classes.to_dict(),
            "ignore_index": self.ignore_index,
            "patch_size": self.patch_size,
            "overlap": self.overlap,
            "datasets": {name: e.to_dict() for name, e in self.datasets.items()},
        }

    def dataset(self, name: str, root: str | Path) -> DatasetEntry:
        """Return the entry of ``name`` in the folder ``root``.

        Raises:
            UserError: not an ISPRS dataset, or not prepared in ``root``.

        """
        if name not in facts.DATASETS:
            raise UserError(f"Unknown ISPRS dataset '{name}'; use 'potsdam' or 'vaihingen'.")
        entry = self.datasets.get(name)
        if entry is None:
            raise UserError(
                f"'{root}' holds no prepared {name} tiles; run 'semimtl-geo prepare-isprs "
                f"--{name} DOWNLOAD_FOLDER -o {root}'."
            )
        return entry


def read_manifest_file(out: str | Path) -> dict[str, Any]:
    """Load ``OUT/manifest.json`` as a mapping (UserError if missing or unreadable)."""
    path = Path(out) / MANIFEST_NAME
    if not path.is_file():
        raise UserError(f"'{path}' does not exist; run 'semimtl-geo prepare-isprs -o {out}' first.")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(
            f"'{path}' is not a readable manifest ({exc}); prepare the data again."
        ) from None
    if not isinstance(data, dict):
        raise UserError(
            f"'{path}' is not a readable manifest (not a mapping); prepare the data again."
        )
    return data


def load_manifest(out: str | Path) -> Manifest:
    """Read ``OUT/manifest.json`` into a :class:`Manifest`.

    Raises:
        UserError: missing or unreadable (also: keys of the wrong type) manifest.

    """
    data = read_manifest_file(out)
    try:
        return Manifest.from_dict(data)
    except (TypeError, KeyError, AttributeError, ValueError) as exc:
        raise UserError(
            f"'{Path(out) / MANIFEST_NAME}' is not a readable manifest ({exc}); prepare the "
            "data again."
        ) from None
