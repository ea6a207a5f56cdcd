"""Streaming sliding-window engine shared by in-memory and raster inference.

Windows are processed one *row of windows* at a time. Blended sums (weighted class
probabilities, weighted heights and the weights themselves) are kept only for the band
of rows the current window row covers (``win_h x width``). When the next window row
starts at ``r_next``, rows ``[r, r_next)`` can receive no more contributions: they are
finalised (argmax, weighted mean), handed to a sink, and the band is shifted up. Memory
is therefore ``O(win_h x width)``, independent of the raster height, and the caller's
sink decides whether rows go to an array or straight to a GeoTIFF.

Nodata pixels (``valid == False``) are filled with the band means (the raw value that
normalises to 0) before the model sees them, so nodata never reaches the model as
zeros; they come out as class 255 and height NaN. Windows with no valid pixel are
skipped. While one window row runs through the model, the next strip is read in a
background thread.
"""

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from semimtl_geo.classes import IGNORE_INDEX
from semimtl_geo.inference.blending import hann_2d
from semimtl_geo.inference.predictor import WindowPredictor
from semimtl_geo.inference.windows import WindowGrid

#: ``read_strip(row_start, row_stop) -> (pixels C x h x width, valid h x width bool)``.
StripReader = Callable[[int, int], tuple[np.ndarray, np.ndarray]]


@dataclass
class BlendedRows:
    """Finished output rows ``[row_start, row_start + valid.shape[0])`` of the raster."""

    row_start: int
    valid: np.ndarray
    classes: np.ndarray | None = None
    height: np.ndarray | None = None
    probs: np.ndarray | None = None


RowSink = Callable[[BlendedRows], None]


def _fill_invalid(strip: np.ndarray, valid: np.ndarray, fill: np.ndarray) -> np.ndarray:
    if valid.all():
        return strip
    strip = strip.copy()
    invalid = ~valid
    for band in range(strip.shape[0]):
        value = fill[band]
        if np.issubdtype(strip.dtype, np.integer):
            info = np.iinfo(strip.dtype)
            value = np.clip(np.rint(value), info.min, info.max)
        strip[band][invalid] = value
    return strip


def run_sliding_windows(
    grid: WindowGrid,
    read_strip: StripReader,
    predictor: WindowPredictor,
    sink: RowSink,
    *,
    batch_size: int = 4,
    keep_probs: bool = False,
    on_windows: Callable[[int], None] | None = None,
) -> None:
    """Predict every window of ``grid`` and emit blended rows top to bottom.

    Args:
        grid: the window grid (see :func:`semimtl_geo.inference.windows.make_grid`).
        read_strip: returns raw pixels and the valid mask of a band of full-width rows.
        predictor: the batched model runner.
        sink: receives each finished band of rows, in order, exactly once.
        batch_size: windows per model call.
        keep_probs: also hand blended probabilities to the sink.
        on_windows: called with the number of windows just done (progress bars).

    """
    tasks = predictor.tasks
    seg, hgt = "seg" in tasks, "height" in tasks
    width, win_h, win_w = grid.width, grid.win_h, grid.win_w
    weight = hann_2d(win_h, win_w)
    acc_w = np.zeros((win_h, width), np.float32)
    acc_p = np.zeros((predictor.num_classes, win_h, width), np.float32) if seg else None
    acc_h = np.zeros((win_h, width), np.float32) if hgt else None
    rows = grid.row_starts

    def flush(row: int, count: int, valid: np.ndarray) -> None:
        valid = valid[:count] & (acc_w[:count] > 0)
        out = BlendedRows(row_start=row, valid=valid)
        if seg:
            cls = np.argmax(acc_p[:, :count], axis=0).astype(np.uint8)
            cls[~valid] = IGNORE_INDEX
            out.classes = cls
            if keep_probs:
                with np.errstate(invalid="ignore", divide="ignore"):
                    probs = acc_p[:, :count] / acc_w[:count]
                probs[:, ~valid] = np.nan
                out.probs = probs.astype(np.float32)
        if hgt:
            with np.errstate(invalid="ignore", divide="ignore"):
                height = acc_h[:count] / acc_w[:count]
            height[~valid] = np.nan
            out.height = height.astype(np.float32)
        sink(out)

    def shift(step: int) -> None:
        for acc in (acc_w, acc_h):
            if acc is not None:
                acc[: win_h - step] = acc[step:]
                acc[win_h - step:] = 0
        if acc_p is not None:
            acc_p[:, : win_h - step] = acc_p[:, step:]
            acc_p[:, win_h - step:] = 0

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="semimtl-read") as pool:
        pending = pool.submit(read_strip, rows[0], rows[0] + win_h)
        for k, row in enumerate(rows):
            pixels, valid = pending.result()
            if k + 1 < len(rows):
                pending = pool.submit(read_strip, rows[k + 1], rows[k + 1] + win_h)
            pixels = _fill_invalid(pixels, valid, predictor.fill_values)
            cols = [c for c in grid.col_starts if valid[:, c:c + win_w].any()]
            skipped = len(grid.col_starts) - len(cols)
            if skipped and on_windows:
                on_windows(skipped)
            for b in range(0, len(cols), batch_size):
                chunk = cols[b:b + batch_size]
                batch = np.stack([pixels[:, :, c:c + win_w] for c in chunk])
                result = predictor(batch, grid)
                for i, c in enumerate(chunk):
                    acc_w[:, c:c + win_w] += weight
                    if seg:
                        probs = result["probs"][i]
                        probs *= weight  # in place: the runner's output is ours to reuse
                        acc_p[:, :, c:c + win_w] += probs
                    if hgt:
                        height = result["height"][i]
                        height *= weight
                        acc_h[:, c:c + win_w] += height
                if on_windows:
                    on_windows(len(chunk))
            if k + 1 < len(rows):
                step = rows[k + 1] - row
                flush(row, step, valid)
                shift(step)
            else:
                flush(row, grid.height - row, valid)
