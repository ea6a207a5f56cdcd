"""The one edge-aligned window grid (prepare's patch counts, evaluation and predict).

Windows of ``window`` pixels start every ``stride`` pixels along an axis; the last one is
shifted back so that it ends exactly at the edge (it overlaps its neighbour more) instead
of sticking out past the data and being padded (torchgeo's ``GriddedPatchSampler``
centres its grid and lets edge patches stick out). The paper evaluates on 512 px patches
with 50 % overlap (section 4.1).

The stride of a window with overlap ``o`` is ``floor(window * (1 - o))`` (at least 1):
at 512 px and 10 % overlap that is 460 px, so neighbours overlap by at least ``o``.
"""

import math


def grid_stride(window: int, overlap: float) -> int:
    """Step between window starts for a fractional ``overlap`` in ``[0, 1)``."""
    return max(1, int(math.floor(window * (1.0 - overlap))))


def grid_starts(length: int, window: int, stride: int) -> list[int]:
    """Start offsets covering ``[0, length)`` with the last window ending at ``length``.

    Args:
        length: raster size along the axis (pixels).
        window: window size along the axis.
        stride: step between window starts (values below 1 step by 1).

    Returns:
        Sorted, unique start offsets; ``[0]`` when the window spans the whole axis (a
        shorter axis gets one window covering all of it; callers clip the window).

    """
    if window >= length:
        return [0]
    starts = list(range(0, length - window + 1, max(1, stride)))
    if starts[-1] != length - window:
        starts.append(length - window)
    return starts


def grid_count(length: int, window: int, stride: int) -> int:
    """Count grid positions: ``ceil((L - W) / S) + 1`` for ``L > W`` (= ``len(grid_starts)``)."""
    if window >= length:
        return 1
    return -(-(length - window) // max(1, stride)) + 1
