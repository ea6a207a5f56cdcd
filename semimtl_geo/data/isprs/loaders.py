"""What training and evaluation call to read prepared ISPRS data.

The prepared root is the ``-o`` folder of ``semimtl-geo prepare-isprs``; its
``manifest.json`` holds the tiles, bands, class table, GSD, nDSM ``height_scale`` and the
per-band mean/std of the train images (pixel/255 scale). Public API:

* :func:`read_manifest` - the manifest as a dict.
* :func:`dataset_info` - class table, bands, GSD, height scale, mean/std of one dataset
  (:meth:`ISPRSInfo.model_meta` fills a :class:`semimtl_geo.checkpoint.ModelMeta`).
* :func:`make_isprs_train_loader` - random crops as batched training dicts.
* :func:`make_isprs_grid_loader` - the per-tile 512 px / 50 % evaluation grid as batches.
* :func:`isprs_geodataset` - the underlying torchgeo dataset of one split.
* :func:`list_isprs_tiles` / :func:`read_isprs_tile` - whole tiles with float64
  georeferencing, for evaluation over full test tiles and for writing results back.

Sample convention (shared by every dataset of the project): ``image`` float32 CxHxW
normalised as ``(pixel / 255 - mean) / std``; ``mask`` int64 HxW with 255 = ignore;
``height`` float32 HxW normalised nDSM (metres = value * height_scale), NaN = no data.
Keys are present only for the tasks asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
from affine import Affine
from torch.utils.data import DataLoader, Dataset

from semimtl_geo.classes import ClassTable
from semimtl_geo.data import isprs
from semimtl_geo.data.isprs.dataset import make_isprs_geodataset
from semimtl_geo.data.isprs.manifest import load_manifest, read_manifest_file
from semimtl_geo.data.isprs.samplers import (
    CropQuery,
    GeoSlice,
    PatchWindow,
    RandomTileCropSampler,
    TileGrid,
    TileGridSampler,
)
from semimtl_geo.errors import UserError
from semimtl_geo.tasks import TASK_KEYS

#: Crops per epoch of the training loader when ``samples_per_epoch`` is None: long enough
#: that step-based training never exhausts it.
DEFAULT_SAMPLES_PER_EPOCH = 1_000_000


def read_manifest(prepared_root: str | Path) -> dict[str, Any]:
    """Load ``prepared_root/manifest.json`` written by ``semimtl-geo prepare-isprs``.

    Raises:
        UserError: no or unreadable manifest.

    """
    return read_manifest_file(prepared_root)


@dataclass(frozen=True)
class ISPRSInfo:
    """Dataset-level facts from the manifest (what a model trained on it must record)."""

    dataset: str
    classes: ClassTable
    bands: tuple[str, ...]
    gsd: float
    height_scale: float
    height_unit: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    ignore_index: int
    has_labels: bool
    has_height: bool
    patch_size: int
    overlap: float
    crs: str | None
    georeferencing: str | list[str]

    def model_meta(self, **overrides: Any):
        """Build a :class:`semimtl_geo.checkpoint.ModelMeta` filled from this dataset."""
        from semimtl_geo.checkpoint import ModelMeta

        kwargs: dict[str, Any] = {
            "classes": self.classes, "bands": list(self.bands), "mean": list(self.mean),
            "std": list(self.std), "gsd": self.gsd, "height_scale": self.height_scale,
            "height_unit": self.height_unit, "patch_size": self.patch_size,
            "overlap": self.overlap, "ignore_index": self.ignore_index,
        }
        kwargs.update(overrides)
        return ModelMeta(**kwargs)


def dataset_info(prepared_root: str | Path, dataset: str) -> ISPRSInfo:
    """Class table, bands, GSD, height scale and mean/std of a prepared dataset."""
    root = Path(prepared_root)
    m = load_manifest(root)
    e = m.dataset(dataset, root)
    return ISPRSInfo(
        dataset=dataset,
        classes=m.classes,
        bands=tuple(e.bands),
        gsd=float(e.gsd),
        height_scale=float(e.height_scale),
        height_unit=e.height_unit,
        mean=tuple(e.mean),
        std=tuple(e.std),
        ignore_index=int(m.ignore_index),
        has_labels=bool(e.has_labels),
        has_height=bool(e.has_height),
        patch_size=int(m.patch_size),
        overlap=float(m.overlap),
        crs=e.crs,
        georeferencing=e.georeferencing,
    )


@dataclass(frozen=True)
class TileRecord:
    """One prepared tile: its files and float64 grid (from the manifest)."""

    dataset: str
    tile_id: str
    split: str | None
    image_path: Path
    mask_path: Path | None
    height_path: Path | None
    width: int
    height: int
    transform: tuple[float, float, float, float, float, float]
    crs: str
    bands: tuple[str, ...]
    gsd: float
    height_scale: float

    @property
    def affine(self) -> Affine:
        """float64 affine transform of the tile."""
        return Affine(*self.transform)

    def grid(self) -> TileGrid:
        """Return the tile as the samplers see it."""
        return TileGrid(self.tile_id, self.width, self.height, self.transform)


@dataclass
class TileArrays:
    """A whole prepared tile in memory.

    Attributes:
        image: uint8 CxHxW, bands as in ``record.bands``.
        mask: uint8 HxW class ids (255 = ignore), or None without labels.
        height: float32 HxW normalised nDSM (NaN = nodata), or None without nDSM.
        transform: float64 affine transform (use it to write results back).
        crs: rasterio CRS.
        tile_id: the tile id (``2_10``, ``1``...).
        record: the record it was read from.

    """

    image: np.ndarray
    mask: np.ndarray | None
    height: np.ndarray | None
    transform: Affine
    crs: Any
    tile_id: str
    record: TileRecord


def list_isprs_tiles(
    prepared_root: str | Path, dataset: str, split: str = "test"
) -> list[TileRecord]:
    """List the prepared tiles of one dataset and split (``train``, ``test`` or ``all``).

    Raises:
        UserError: unknown dataset/split, nothing prepared, or no tile in that split.

    """
    root = Path(prepared_root)
    e = load_manifest(root).dataset(dataset, root)
    if split not in ("train", "test", "all"):
        raise UserError(f"Unknown split '{split}'; use 'train', 'test' or 'all'.")
    records = []
    for t in e.tiles:
        if split != "all" and t.split != split:
            continue
        records.append(TileRecord(
            dataset=dataset, tile_id=t.tile_id, split=t.split,
            image_path=root / t.image,
            mask_path=root / t.label if t.label else None,
            height_path=root / t.ndsm if t.ndsm else None,
            width=int(t.width), height=int(t.height),
            transform=tuple(float(v) for v in t.transform), crs=t.crs,
            bands=tuple(e.bands), gsd=float(e.gsd),
            height_scale=float(e.height_scale),
        ))
    if not records:
        raise UserError(
            f"No prepared {dataset} tiles in the '{split}' split under '{root}'; prepare tiles "
            f"of that split (official ids: {', '.join(isprs.SPLITS[dataset].get(split, ())[:6])}"
            "...)."
        )
    return records


def read_isprs_tile(record: TileRecord) -> TileArrays:
    """Read a whole prepared tile (image, mask, height) with its float64 georeferencing."""
    with rasterio.open(record.image_path) as src:
        image = src.read()
        transform, crs = src.transform, src.crs
    mask = height = None
    if record.mask_path is not None:
        with rasterio.open(record.mask_path) as src:
            mask = src.read(1)
    if record.height_path is not None:
        with rasterio.open(record.height_path) as src:
            height = src.read(1).astype(np.float32)
    return TileArrays(image, mask, height, transform, crs, record.tile_id, record)


# ----------------------------------------------------------------------------------------
# torch loaders
# ----------------------------------------------------------------------------------------


def dihedral(t: torch.Tensor, code: int) -> torch.Tensor:
    """Apply one of the 8 flip/rot90 transforms (``code`` 0 = identity) to ``...xHxW``."""
    if code & 4:
        t = t.flip(-1)
    k = code & 3
    return torch.rot90(t, k, dims=(-2, -1)) if k else t


class NormalisedSamples(Dataset):
    """Turns raw torchgeo samples into the project's training dicts.

    Items are ``GeoSlice`` or ``(GeoSlice, aug_code)`` queries from the samplers.

    Args:
        geo: torchgeo dataset of the prepared layers.
        mean: per-band mean on the pixel/255 scale.
        std: per-band std on the pixel/255 scale.
        tasks: ``seg`` (key ``mask``) and/or ``height`` (key ``height``).

    """

    def __init__(self, geo: Any, mean: Sequence[float], std: Sequence[float],
                 tasks: Sequence[str]):
        self.geo = geo
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
        self.keys = [TASK_KEYS[t] for t in tasks]

    def __getitem__(self, query: GeoSlice | CropQuery) -> dict[str, torch.Tensor]:
        aug, size = 0, None
        if isinstance(query, CropQuery):
            query, aug, size = query.geoslice, query.aug, query.size
        s = self.geo[query]
        image = s["image"].float()
        mask = s["mask"].long() if "mask" in self.keys else None
        height = s["height"].float() if "height" in self.keys else None
        if size is not None and tuple(image.shape[-2:]) != (size, size):
            image, mask, height = rescale_crop(image, mask, height, size)
        image = (image / 255.0 - self.mean) / self.std
        out = {"image": dihedral(image, aug).contiguous()}
        if mask is not None:
            out["mask"] = dihedral(mask, aug).contiguous()
        if height is not None:
            out["height"] = dihedral(height, aug).contiguous()
        return out


def rescale_crop(
    image: torch.Tensor, mask: torch.Tensor | None, height: torch.Tensor | None, size: int
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Resize a randomly scaled crop to ``size`` x ``size`` (the paper's scale augmentation).

    The image is resampled bilinearly (antialiased when shrinking); class labels and
    heights by nearest neighbour, so no class is invented at boundaries and no-data
    (NaN) heights stay no-data. Heights keep their values: an nDSM's heights do not
    change with the ground sampling distance.
    """
    img = _resize(image, size, "bilinear")
    mask = None if mask is None else _resize(mask.float(), size, "nearest-exact").long()
    height = None if height is None else _resize(height, size, "nearest-exact")
    return img, mask, height


def _resize(t: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    """Resize the last two axes of ``t`` (any leading axes) to ``size`` x ``size``."""
    lead = t.shape[:-2]
    flat = t.reshape(1, -1, *t.shape[-2:])
    kwargs: dict = {"align_corners": False, "antialias": t.shape[-1] > size} \
        if mode == "bilinear" else {}
    out = torch.nn.functional.interpolate(flat, size=(size, size), mode=mode, **kwargs)
    return out.reshape(*lead, size, size)


def isprs_geodataset(prepared_root: str | Path, dataset: str, split: str = "train",
                     tasks: Sequence[str] = ("seg", "height")):
    """Build the torchgeo dataset (image & mask & height layers) of one prepared split.

    Index it with the ``GeoSlice`` queries of :mod:`semimtl_geo.data.isprs.samplers`; samples hold
    raw pixel values (float32 0-255) under ``image``, plus ``mask``/``height`` per task.
    """
    records = list_isprs_tiles(prepared_root, dataset, split)
    return _layers(records, tasks, dataset)


def _layers(records: Sequence[TileRecord], tasks: Sequence[str], dataset: str):
    for t in tasks:
        if t not in TASK_KEYS:
            raise UserError(f"Unknown task '{t}'; use 'seg' and/or 'height'.")
    masks = heights = None
    if "seg" in tasks:
        if any(r.mask_path is None for r in records):
            raise UserError(f"Prepared {dataset} tiles have no labels; drop the 'seg' task.")
        masks = [r.mask_path for r in records]
    if "height" in tasks:
        if any(r.height_path is None for r in records):
            raise UserError(
                f"Prepared {dataset} tiles have no nDSM; prepare them without --no-ndsm or drop "
                "the 'height' task."
            )
        heights = [r.height_path for r in records]
    return make_isprs_geodataset([r.image_path for r in records], masks, heights,
                                 dataset=dataset)


def _norm(prepared_root: Path, dataset: str, mean, std) -> tuple[list[float], list[float]]:
    info = dataset_info(prepared_root, dataset)
    mean = list(info.mean if mean is None else mean)
    std = list(info.std if std is None else std)
    if len(mean) != len(info.bands) or len(std) != len(info.bands):
        raise UserError(
            f"mean/std need {len(info.bands)} values for the bands {', '.join(info.bands)}, got "
            f"{len(mean)}/{len(std)}."
        )
    return mean, std


def make_isprs_train_loader(
    prepared_root: str | Path,
    dataset: str,
    *,
    split: str = "train",
    tasks: Sequence[str] = ("seg", "height"),
    crop_size: int = 384,
    batch_size: int = 4,
    num_workers: int = 0,
    samples_per_epoch: int | None = None,
    seed: int = 0,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    augment: bool = True,
    scale_range: Sequence[float] | None = None,
) -> DataLoader:
    """Random-crop training batches of one prepared ISPRS dataset.

    Crops are ``crop_size`` px, pixel-aligned inside one tile (never resampled, never
    straddling tiles), tiles drawn in proportion to their area; with ``augment`` each crop
    gets one of the 8 flip/rot90 transforms. The crop stream is fixed by ``seed`` (epoch
    ``e`` uses ``seed + e``), whatever ``num_workers``.

    Args:
        prepared_root: the ``-o`` folder of ``prepare-isprs``.
        dataset: ``potsdam`` or ``vaihingen``.
        split: ``train`` (default), ``test`` or ``all``.
        tasks: ``seg`` adds ``mask``, ``height`` adds ``height`` to each batch.
        crop_size: crop side in pixels (the paper uses 384 for ISPRS).
        batch_size: crops per batch.
        num_workers: DataLoader worker processes.
        samples_per_epoch: crops per epoch; None = 1,000,000 (effectively endless).
        seed: seed of the crop/augmentation stream.
        mean: per-band mean on pixel/255 scale (default: the manifest's train statistics).
        std: per-band std on pixel/255 scale (default: the manifest's).
        augment: random flips/rot90.
        scale_range: ``(low, high)`` random scale factors (PSPNet augmentation, the
            paper's [65]): a window of ``crop_size / s`` px is read and resized to
            ``crop_size``; ``None`` = no scaling.

    Returns:
        A DataLoader yielding ``{"image": float32 BxCxHxW, "mask": int64 BxHxW,
        "height": float32 BxHxW}`` (only the keys for ``tasks``).

    """
    root = Path(prepared_root)
    records = list_isprs_tiles(root, dataset, split)
    mean_l, std_l = _norm(root, dataset, mean, std)
    geo = _layers(records, tasks, dataset)
    try:
        sampler = RandomTileCropSampler(
            [r.grid() for r in records], crop_size=crop_size,
            length=samples_per_epoch or DEFAULT_SAMPLES_PER_EPOCH, seed=seed, augment=augment,
            scale_range=scale_range,
        )
    except ValueError as exc:
        raise UserError(
            f"Cannot crop {dataset} {split} tiles: {exc}; use a smaller crop size."
        ) from None
    return DataLoader(
        NormalisedSamples(geo, mean_l, std_l, tasks), batch_size=batch_size, sampler=sampler,
        num_workers=num_workers, drop_last=True, persistent_workers=num_workers > 0,
    )


def make_isprs_grid_loader(
    prepared_root: str | Path,
    dataset: str,
    *,
    split: str = "test",
    tasks: Sequence[str] = ("seg", "height"),
    patch_size: int | None = None,
    overlap: float | None = None,
    batch_size: int = 4,
    num_workers: int = 0,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> tuple[DataLoader, list[PatchWindow]]:
    """Load evaluation patches on the per-tile, edge-aligned grid (512 px, 50 % overlap default).

    Returns:
        ``(loader, windows)``: batches in the same order as ``windows``, each window
        giving the tile id, pixel offsets and float64 transform of its patch. Tiles smaller
        than the patch give one patch of their own size, so use ``batch_size=1`` if tile
        sizes vary below the patch size.

    """
    root = Path(prepared_root)
    info = dataset_info(root, dataset)
    records = list_isprs_tiles(root, dataset, split)
    mean_l, std_l = _norm(root, dataset, mean, std)
    sampler = TileGridSampler([r.grid() for r in records], patch_size or info.patch_size,
                              info.overlap if overlap is None else overlap)
    geo = _layers(records, tasks, dataset)
    loader = DataLoader(NormalisedSamples(geo, mean_l, std_l, tasks), batch_size=batch_size,
                        sampler=sampler, num_workers=num_workers)
    return loader, list(sampler.windows)


__all__ = [
    "DEFAULT_SAMPLES_PER_EPOCH",
    "ISPRSInfo",
    "NormalisedSamples",
    "TileArrays",
    "TileRecord",
    "dataset_info",
    "dihedral",
    "isprs_geodataset",
    "list_isprs_tiles",
    "make_isprs_grid_loader",
    "make_isprs_train_loader",
    "read_isprs_tile",
    "read_manifest",
]
