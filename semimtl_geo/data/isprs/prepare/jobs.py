"""What a preparation run is asked for and what each tile gives back."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from semimtl_geo.data import isprs
from semimtl_geo.data.isprs.archives import SourceFile


@dataclass
class PrepareOptions:
    """Options of :func:`prepare_isprs` (the CLI flags of ``semimtl-geo prepare-isprs``).

    Attributes:
        target_gsd: output metres per pixel (the paper resamples Potsdam to 9 cm).
        potsdam_bands: ``IRRG`` (paper default), ``RGB`` or ``RGBIR``.
        labels: ``all`` (full labels) or ``noBoundary`` (eroded; boundary -> 255).
        ndsm: prepare the nDSM layer (False: images and labels only).
        potsdam_ndsm: which Potsdam nDSM product, ``lastools`` or ``ownapproach``.
        height_scale: metres per normalised nDSM unit, per dataset.
        workers: parallel tile workers (processes).
        overwrite: replace an existing prepared dataset.
        tiles: restrict to these tile ids per dataset (a dataset absent from the dict, or
            None, means all tiles found).
        patch_size: evaluation patch size used for the patch counts in the manifest.
        overlap: evaluation patch overlap.
        progress: show progress bars.
        preview: write ``OUT/<dataset>/preview.png`` of one prepared tile.

    """

    target_gsd: float = 0.09
    potsdam_bands: str = "IRRG"
    labels: str = "all"
    ndsm: bool = True
    potsdam_ndsm: str = "lastools"
    height_scale: dict[str, float] = field(
        default_factory=lambda: dict.fromkeys(isprs.DATASETS, isprs.DEFAULT_HEIGHT_SCALE)
    )
    workers: int = 1
    overwrite: bool = False
    tiles: dict[str, list[str]] | None = None
    patch_size: int = 512
    overlap: float = 0.5
    progress: bool = True
    preview: bool = True


@dataclass
class TileJob:
    """Everything a worker needs to prepare one tile (picklable)."""

    dataset: str
    tile: str
    split: str | None
    image: SourceFile
    band_indexes: list[int]
    bands: list[str]
    label: SourceFile | None
    ndsm: SourceFile | None
    out_root: str
    target_gsd: float
    native_gsd: float


@dataclass
class TileResult:
    """Outcome of one tile: its manifest record, or the error that failed it."""

    dataset: str
    tile: str
    split: str | None
    ok: bool
    error: str = ""
    record: dict[str, Any] = field(default_factory=dict)
    band_hist: list[list[int]] | None = None
    seconds: float = 0.0
    source_bytes: int = 0


@dataclass
class PrepareReport:
    """What :func:`prepare_isprs` did."""

    manifest_path: Path
    results: list[TileResult]

    @property
    def failed(self) -> list[TileResult]:
        """Tiles that could not be prepared."""
        return [r for r in self.results if not r.ok]

    @property
    def unknown_colors(self) -> dict[str, dict[str, int]]:
        """``tile -> {"r,g,b": pixel count}`` of label colours outside the class table."""
        return {f"{r.dataset}/{r.tile}": r.record["unknown_colors"]
                for r in self.results if r.ok and r.record.get("unknown_colors")}


class TileError(Exception):
    """A problem with one tile's files (reported by tile name, does not stop the run)."""
