"""Per-tile samplers for the prepared ISPRS tiles.

torchgeo 0.10's ``GriddedPatchSampler`` covers the *union* of all tiles (patches straddle
tiles and splits) and centres its grid so that edge patches stick out past the data
(zero-filled). The paper's evaluation patches are per tile and inside it, so these
samplers work from each tile's own float64 grid (its affine transform and size):

* :class:`TileGridSampler` - 512 px patches at 50 % overlap, the last row/column shifted to
  end exactly at the tile edge, never padded, never straddling two tiles.
* :class:`RandomTileCropSampler` - random pixel-aligned crops (384 px default) inside one
  tile at a time, for training.

Both yield ``GeoSlice`` queries ``(slice(xmin, xmax, res), slice(ymin, ymax, res))`` that
a :mod:`torchgeo` dataset of the prepared layers accepts, computed in float64 from the
tile transform, and keep the pixel window of every patch in :class:`PatchWindow`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from affine import Affine
from torch.utils.data import Sampler

from semimtl_geo.data.isprs import GridSpec
from semimtl_geo.grid import grid_count, grid_starts

GeoSlice = tuple[slice, slice]


@dataclass(frozen=True)
class TileGrid:
    """What a sampler needs of a tile: its id, pixel size and float64 affine transform."""

    tile_id: str
    width: int
    height: int
    transform: tuple[float, float, float, float, float, float]

    @property
    def affine(self) -> Affine:
        """The float64 transform as an :class:`affine.Affine`."""
        return Affine(*self.transform)


@dataclass(frozen=True)
class PatchWindow:
    """A patch as a pixel window of its tile, plus its georeferencing (float64)."""

    tile_id: str
    row: int
    col: int
    height: int
    width: int
    transform: Affine

    def geoslice(self) -> GeoSlice:
        """Return the torchgeo query covering exactly this window."""
        t = self.transform
        res_x, res_y = t.a, -t.e
        xmin, ymax = t.c, t.f
        return (slice(xmin, xmin + self.width * res_x, res_x),
                slice(ymax - self.height * res_y, ymax, res_y))


def window(tile: TileGrid, row: int, col: int, height: int, width: int) -> PatchWindow:
    """Pixel window of a tile with its own float64 transform."""
    if row < 0 or col < 0 or row + height > tile.height or col + width > tile.width:
        raise ValueError(f"window {row},{col},{height}x{width} leaves tile {tile.tile_id}")
    t = tile.affine @ Affine.translation(col, row)
    return PatchWindow(tile.tile_id, row, col, height, width, t)


def grid_windows(tile: TileGrid, spec: GridSpec) -> list[PatchWindow]:
    """Edge-aligned grid of a tile: ``ceil((L - P) / S) + 1`` positions per axis.

    A tile smaller than the patch along an axis gets one patch of the tile's size there.
    """
    ph, pw = min(spec.patch_size, tile.height), min(spec.patch_size, tile.width)
    rows = grid_starts(tile.height, spec.patch_size, spec.stride)
    cols = grid_starts(tile.width, spec.patch_size, spec.stride)
    return [window(tile, r, c, ph, pw) for r in rows for c in cols]


class TileGridSampler(Sampler[GeoSlice]):
    """Per-tile evaluation grid: 512 px at 50 % overlap, last row/column at the tile edge.

    Args:
        tiles: the tiles to cover (e.g. the test split).
        patch_size: patch side in pixels.
        overlap: fraction of overlap between neighbouring patches.

    """

    def __init__(self, tiles: Sequence[TileGrid], patch_size: int = 512, overlap: float = 0.5):
        self.spec = GridSpec(patch_size, overlap)
        self.windows = [w for t in tiles for w in grid_windows(t, self.spec)]

    def __iter__(self) -> Iterator[GeoSlice]:
        for w in self.windows:
            yield w.geoslice()

    def __len__(self) -> int:
        return len(self.windows)

    @staticmethod
    def expected_count(width: int, height: int, patch_size: int = 512, overlap: float = 0.5) -> int:
        """Closed-form patch count of one tile (for checks and the manifest)."""
        s = GridSpec(patch_size, overlap).stride
        return grid_count(width, patch_size, s) * grid_count(height, patch_size, s)


class CropQuery(NamedTuple):
    """One training crop: the window to read, its flip/rot90 code, and the output size.

    ``size`` differs from the window's side when the crop is randomly scaled: the window
    is read at its own size and resized to ``size`` (scale = size / window side).
    """

    geoslice: GeoSlice
    aug: int
    size: int


class RandomTileCropSampler(Sampler[CropQuery]):
    """Random crops inside single tiles, for training.

    Tiles are drawn with probability proportional to their number of crop positions;
    crops are pixel-aligned on the tile grid. Each item is a :class:`CropQuery`: ``aug``
    in 0..7 encodes a flip/rot90 (dihedral) transform and, with ``scale_range``, the
    window side is ``crop_size / s`` for a scale ``s`` drawn uniformly from the range
    (PSPNet's random scaling, the paper's "augmentation following [65]"; the window is
    resized to ``crop_size`` when read, and clipped to the tile when ``s`` is small).
    Everything is drawn by the same seeded generator, so batches are reproducible for
    any worker count.

    Args:
        tiles: the tiles to crop from; tiles smaller than the crop are skipped.
        crop_size: crop side in pixels (after scaling).
        length: crops per epoch (iteration restarts with a new stream each epoch).
        seed: seed of the crop stream (epoch ``e`` uses ``seed + e``).
        augment: draw an augmentation code (else always 0 = identity).
        scale_range: ``(low, high)`` scale factors, or ``None`` for no scaling.

    """

    def __init__(self, tiles: Sequence[TileGrid], crop_size: int = 384, length: int = 1000,
                 seed: int = 0, augment: bool = True,
                 scale_range: Sequence[float] | None = None):
        self.tiles = [t for t in tiles if t.width >= crop_size and t.height >= crop_size]
        if not self.tiles:
            sizes = ", ".join(f"{t.tile_id} {t.width}x{t.height}" for t in tiles[:5])
            raise ValueError(f"no tile is at least {crop_size}x{crop_size} px ({sizes})")
        self.crop_size = crop_size
        self.length = int(length)
        self.seed = seed
        self.augment = augment
        self.scale_range = None if scale_range is None else (
            float(scale_range[0]), float(scale_range[1]))
        self.epoch = 0
        weights = [(t.width - crop_size + 1) * (t.height - crop_size + 1) for t in self.tiles]
        self.weights = torch.tensor(weights, dtype=torch.float64)

    def set_epoch(self, epoch: int) -> None:
        """Choose the crop stream of an epoch (called automatically on each iteration)."""
        self.epoch = epoch

    def sample_windows(self, n: int, generator: torch.Generator) -> list[tuple[PatchWindow, int]]:
        """Draw ``n`` crop windows (side ``crop_size / scale``) and augmentation codes."""
        idx = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        u = torch.rand(n, 2, generator=generator, dtype=torch.float64)
        aug = torch.randint(0, 8, (n,), generator=generator)
        scales = None
        if self.scale_range is not None:
            low, high = self.scale_range
            scales = low + (high - low) * torch.rand(n, generator=generator, dtype=torch.float64)
        out = []
        for i in range(n):
            t = self.tiles[int(idx[i])]
            side = self.crop_size
            if scales is not None:
                side = min(max(1, round(self.crop_size / float(scales[i]))), t.width, t.height)
            row = int(u[i, 0] * (t.height - side + 1))
            col = int(u[i, 1] * (t.width - side + 1))
            w = window(t, row, col, side, side)
            out.append((w, int(aug[i]) if self.augment else 0))
        return out

    def __iter__(self) -> Iterator[CropQuery]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        self.epoch += 1
        chunk = 1024
        done = 0
        while done < self.length:
            n = min(chunk, self.length - done)
            for w, a in self.sample_windows(n, g):
                yield CropQuery(w.geoslice(), a, self.crop_size)
            done += n

    def __len__(self) -> int:
        return self.length
