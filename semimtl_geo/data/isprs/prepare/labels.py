"""Label conversion: the ISPRS RGB label colours -> class ids 0-5, 255 = ignore.

Colours are those of :data:`semimtl_geo.data.isprs.CLASSES` (ISPRS 2D semantic labelling
benchmark); the black boundary of the eroded ``noBoundary`` labels is ignored.
"""

from __future__ import annotations

import numpy as np

from semimtl_geo.data import isprs


def colors_to_classes(rgb: np.ndarray) -> tuple[np.ndarray, dict[str, int]]:
    """Map an RGB label image (3xHxW) to class ids; unknown colours -> 255 and are counted.

    The boundary colour (0, 0, 0) of the eroded labels becomes the ignore index 255 and is
    not counted as unknown.

    Returns:
        ``(ids uint8 HxW, {"r,g,b": pixel count} of unknown colours)``.

    """
    r, g, b = rgb[0], rgb[1], rgb[2]
    ids = np.full(r.shape, isprs.IGNORE, np.uint8)
    known = np.zeros(r.shape, bool)
    for k, (cr, cg, cb) in enumerate(list(isprs.CLASSES.colors) + [isprs.BOUNDARY_COLOR]):
        m = (r == cr) & (g == cg) & (b == cb)
        known |= m
        if k < len(isprs.CLASSES):
            ids[m] = k
    unknown: dict[str, int] = {}
    if not known.all():
        codes = (r[~known].astype(np.int32) << 16) | (g[~known].astype(np.int32) << 8) | b[~known]
        vals, counts = np.unique(codes, return_counts=True)
        unknown = {f"{v >> 16},{(v >> 8) & 255},{v & 255}": int(c) for v, c in zip(vals, counts)}
    return ids, unknown
