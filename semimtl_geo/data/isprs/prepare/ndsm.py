"""nDSM normalisation: 8-bit grey levels -> heights in [0, 1] on the ortho's grid.

The ISPRS nDSMs are 8-bit grey images without georeferencing and without a documented
vertical scale: grey / 255 is stored (nodata NaN) and the manifest's ``height_scale``
(metres per unit, ``--<dataset>-height-scale``) turns it into metres. An nDSM up to
:data:`NDSM_SHAPE_TOLERANCE` pixels off the ortho's shape (Potsdam tile 03_13 is one row
short) is padded with nodata or cropped at its bottom/right edges; more fails the tile.
"""

from __future__ import annotations

import numpy as np

from semimtl_geo.data.isprs.archives import SourceFile
from semimtl_geo.data.isprs.prepare.jobs import TileError
from semimtl_geo.data.isprs.prepare.rasters import read_source

#: Largest nDSM/ortho size difference (pixels per axis) that is padded/cropped, not failed.
NDSM_SHAPE_TOLERANCE = 2


def fit_shape(arr: np.ndarray, shape: tuple[int, int], fill: float) -> np.ndarray:
    """Pad (with ``fill``) or crop a 2-D array at its bottom/right edges to ``shape``."""
    out = np.full(shape, fill, arr.dtype)
    h, w = min(shape[0], arr.shape[0]), min(shape[1], arr.shape[1])
    out[:h, :w] = arr[:h, :w]
    return out


def read_ndsm(src: SourceFile, shape: tuple[int, int]) -> tuple[np.ndarray, str | None]:
    """Read an nDSM as float32 grey / 255 fitted to the ortho's ``shape`` = (rows, cols).

    Returns:
        ``(nDSM float32 rows x cols, NaN = nodata; a note when its shape was fitted)``.

    Raises:
        TileError: not 8-bit, or more than :data:`NDSM_SHAPE_TOLERANCE` px off ``shape``.

    """
    h, w = shape
    raw, _ = read_source(src, "nDSM", [1])
    raw = raw[0]
    if raw.dtype != np.uint8:
        raise TileError(
            f"nDSM file {src.display} is {raw.dtype}, expected 8-bit grey levels"
        )
    ndsm = raw.astype(np.float32) / 255.0
    note = None
    if ndsm.shape != (h, w):
        dh, dw = h - ndsm.shape[0], w - ndsm.shape[1]
        if abs(dh) > NDSM_SHAPE_TOLERANCE or abs(dw) > NDSM_SHAPE_TOLERANCE:
            raise TileError(
                f"nDSM/image shape mismatch: nDSM {src.display} is "
                f"{ndsm.shape[1]}x{ndsm.shape[0]} px, "
                f"image is {w}x{h} px"
            )
        note = (f"nDSM {ndsm.shape[1]}x{ndsm.shape[0]} px fitted to {w}x{h} px "
                "(missing rows/columns are nodata)")
        ndsm = fit_shape(ndsm, (h, w), np.nan)
    return ndsm, note
