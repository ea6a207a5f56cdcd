"""Sliding-window grids over a raster, with edge windows shifted inside.

The grid itself is :mod:`semimtl_geo.grid` (the same one prepare counts patches on). A
grid is defined in *input* pixels. Windows are ``win_h x win_w`` input pixels and
start every ``stride`` pixels; the last window of a row/column is shifted back so that
it ends exactly at the raster edge (it overlaps its neighbour more) instead of sticking
out past the data and being zero-padded (torchgeo's ``GriddedPatchSampler`` centres its
grid and lets edge patches stick out).

Each window is fed to the model at ``model_h x model_w`` pixels:

* same GSD, full window: the window itself (``model == win``);
* same GSD, input smaller than the patch: the window is the whole axis and is padded
  at its bottom and right edges, by replicating its last row and column, up to a
  multiple of 8 (at least 32 px) for the encoder; the outputs' top-left ``win_h x win_w``
  pixels are kept (``mode="pad"``). The window's content stays at the same offsets as
  in the raster, so nothing needs shifting back;
* different GSD (``scale != 1``): the window covers ``patch / scale`` input pixels and is
  bilinearly resized to the patch size, and the outputs are resized back to the window
  (``mode="resize"``). Resizing maps the window's outer edges onto each other exactly,
  so outputs stay aligned with the input grid.
"""

import math
from dataclasses import dataclass
from typing import Literal

from semimtl_geo.errors import UserError
from semimtl_geo.grid import grid_starts as window_starts
from semimtl_geo.grid import grid_stride

#: Encoder inputs are kept to a multiple of this (the dilated encoder's stride).
MODEL_MULTIPLE = 8
#: Smallest model input side used for inputs smaller than the patch.
MIN_MODEL_SIZE = 32


def _ceil_to(value: int, multiple: int) -> int:
    return int(math.ceil(value / multiple) * multiple)


@dataclass(frozen=True)
class WindowGrid:
    """Window layout over a ``height x width`` raster (all sizes in input pixels)."""

    height: int
    width: int
    win_h: int
    win_w: int
    row_starts: tuple[int, ...]
    col_starts: tuple[int, ...]
    model_h: int
    model_w: int
    mode: Literal["identity", "pad", "resize"]

    @property
    def num_windows(self) -> int:
        """Total number of windows of the grid."""
        return len(self.row_starts) * len(self.col_starts)


def _axis(length: int, patch: int, overlap: float, scale: float) -> tuple[int, int, int, str]:
    """Window size, stride, model size and mode along one axis."""
    if scale == 1.0:
        win = min(patch, length)
        model = win if win % MODEL_MULTIPLE == 0 and win >= MIN_MODEL_SIZE else max(
            MIN_MODEL_SIZE, _ceil_to(win, MODEL_MULTIPLE)
        )
        mode = "identity" if model == win else "pad"
    else:
        full = max(1, int(round(patch / scale)))
        win = min(full, length)
        model = patch if win == full else max(
            MIN_MODEL_SIZE, _ceil_to(int(round(win * scale)), MODEL_MULTIPLE)
        )
        mode = "resize"
    stride = grid_stride(win, overlap)
    return win, stride, model, mode


def make_grid(
    height: int, width: int, patch_size: int, overlap: float, scale: float = 1.0
) -> WindowGrid:
    """Build the window grid of a raster.

    Args:
        height: raster rows.
        width: raster columns.
        patch_size: model input size in model pixels (``meta.patch_size`` by default).
        overlap: fraction of a window shared with its neighbour, in ``[0, 1)``.
        scale: input GSD / model GSD (``> 1``: input is coarser and gets up-sampled).

    Raises:
        UserError: invalid patch size, overlap or raster size.

    """
    if height < 1 or width < 1:
        raise UserError(f"The raster is {width}x{height} pixels; it needs at least one pixel.")
    if patch_size < MODEL_MULTIPLE:
        raise UserError(f"Patch size {patch_size} is too small; use at least {MODEL_MULTIPLE} px.")
    if not 0.0 <= overlap < 1.0:
        raise UserError(
            f"Overlap {overlap} is outside [0, 1); use e.g. 0.5 for half-window overlap."
        )
    if not scale > 0:
        raise UserError(f"Resampling scale {scale} must be positive.")
    win_h, stride_h, model_h, mode_h = _axis(height, patch_size, overlap, scale)
    win_w, stride_w, model_w, mode_w = _axis(width, patch_size, overlap, scale)
    if scale != 1.0:
        mode = "resize"
    elif mode_h == "identity" and mode_w == "identity":
        mode = "identity"
    else:
        mode = "pad"
    return WindowGrid(
        height=height,
        width=width,
        win_h=win_h,
        win_w=win_w,
        row_starts=tuple(window_starts(height, win_h, stride_h)),
        col_starts=tuple(window_starts(width, win_w, stride_w)),
        model_h=model_h,
        model_w=model_w,
        mode=mode,
    )
