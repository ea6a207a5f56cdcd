"""Streaming sliding-window engine shared by in-memory and raster inference.

Windows are processed one *row of windows* at a time. Blended sums (weighted class
probabilities, weighted heights and the weights themselves) are kept only for the band
of rows the current window row covers (``win_h x width``). When the next window row
starts at ``r_next``, rows ``[r, r_next)`` can receive no more contributions: they are
finalised (argmax, weighted mean), handed to a sink, and the band is shifted up. Memory
is therefore ``O(win_h x width)``, independent of the raster height, and the caller's
sink decides whether rows go to an array or straight to a GeoTIFF.

Everything between the raw pixels and the finished rows runs in torch on the
predictor's device: the strip of input rows is uploaded once (as read, e.g. uint8), the
windows are cut from it there, normalised, run through the network, soft-maxed, weighted
and accumulated there; on CUDA the accumulators never leave the GPU and only finished
rows (uint8 classes, float32 heights) come back. Each input row is read and uploaded
once: consecutive window rows overlap, so only the rows the next window row adds are
read (in a background thread, while the current row runs through the model). Class
sums are stored class-major (``K x H x W``), like the network's float32 output.

The band is a ring: band row ``i`` lives in accumulator row ``(origin + i) mod win_h``.
Finishing rows zeroes them and moves ``origin`` on, instead of moving every still-open
row up (that copy of ``(K + 2) x win_h x width`` floats per window row cost as much as
the blending). A window whose rows wrap around the ring is added in two pieces; every
pixel still receives the same products in the same order, so results are unchanged.
On the CPU the blending and the finishing of rows run on one torch thread
(:func:`~semimtl_geo.inference.predictor.one_thread`; the model and the softmax keep all
threads): many short memory-bound operations on cores other jobs share spent more time
waiting for a descheduled second thread than they saved.

Nodata pixels (``valid == False``) are filled with the band means (the raw value that
normalises to 0) before the model sees them, so nodata never reaches the model as
zeros; they come out as class 255 and height NaN. Windows with no valid pixel are
skipped.
"""

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from semimtl_geo.classes import IGNORE_INDEX
from semimtl_geo.inference.blending import hann_1d, hann_2d
from semimtl_geo.inference.predictor import WindowPredictor, one_thread
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


def _fill_tensor(fill: np.ndarray, dtype: np.dtype, device: torch.device) -> torch.Tensor:
    """Per-band fill values (``C x 1 x 1``) in the strip's dtype (rounded for integers)."""
    values = fill.astype(np.float64)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        values = np.clip(np.rint(values), info.min, info.max)
    return torch.from_numpy(values.astype(dtype)).view(-1, 1, 1).to(device)


def _upload(array: np.ndarray, device: torch.device) -> torch.Tensor:
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor


def _read_plan(grid: WindowGrid) -> list[tuple[int, int]]:
    """Rows each window row adds to the previous strip (each raster row read once)."""
    plan, held_stop = [], 0
    for row in grid.row_starts:
        stop = min(row + grid.win_h, grid.height)
        plan.append((max(row, held_stop), stop))
        held_stop = stop
    return plan


def _argmax_classes(sums: torch.Tensor) -> torch.Tensor:
    """Per-pixel index of the largest of ``K x h x W`` class sums (uint8; ties: lowest).

    The maximum first, then one comparison per class from the last to the first: less
    CPU time than ``argmax`` over a strided class dimension or a transposed copy.
    """
    best = sums.amax(0)
    classes = torch.full(best.shape, sums.shape[0] - 1, dtype=torch.uint8, device=sums.device)
    for k in range(sums.shape[0] - 2, -1, -1):
        classes.masked_fill_(sums[k] == best, k)
    return classes


def _ring_pieces(origin: int, start: int, stop: int, size: int) -> list[tuple[slice, slice]]:
    """Band rows ``[start, stop)`` as (accumulator rows, band rows) pieces of a ring.

    Band row ``i`` is accumulator row ``(origin + i) % size``; ``stop - start <= size``.
    One piece, or two where the rows wrap past the end of the accumulator.
    """
    first = (origin + start) % size
    count = stop - start
    if first + count <= size:
        return [(slice(first, first + count), slice(start, stop))]
    head = size - first
    return [(slice(first, size), slice(start, start + head)),
            (slice(0, count - head), slice(start + head, stop))]


@torch.inference_mode()
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
        read_strip: returns raw pixels and the valid mask of a band of full-width rows;
            called once per window row with only the rows not read before, top to bottom.
        predictor: the batched model runner.
        sink: receives each finished band of rows, in order, exactly once.
        batch_size: windows per model call.
        keep_probs: also hand blended probabilities to the sink.
        on_windows: called with the number of windows just done (progress bars).

    """
    dev = predictor.device
    tasks = predictor.tasks
    seg, hgt = "seg" in tasks, "height" in tasks
    width, win_h, win_w = grid.width, grid.win_h, grid.win_w
    weight = torch.from_numpy(hann_2d(win_h, win_w)).to(dev)
    # Ring accumulators (see module docstring): band row i is row (origin + i) % win_h.
    acc_w = torch.zeros((win_h, width), dtype=torch.float32, device=dev)
    sums = (torch.zeros((predictor.num_classes, win_h, width), dtype=torch.float32, device=dev)
            if seg else None)
    # The weight sum of a full row of windows is separable: a(i) x sum_c b(j - c).
    weight_1d = torch.from_numpy(hann_1d(win_w)).to(dev)
    full_cover = torch.zeros(width, dtype=torch.float32, device=dev)
    for c in grid.col_starts:
        full_cover[c:c + win_w] += weight_1d
    full_wsum = torch.outer(torch.from_numpy(hann_1d(win_h)).to(dev), full_cover)
    acc_h = torch.zeros((win_h, width), dtype=torch.float32, device=dev) if hgt else None
    rows = grid.row_starts
    plan = _read_plan(grid)
    fill: torch.Tensor | None = None
    strip: torch.Tensor | None = None  # C x win_h x W on the device, nodata filled
    valid = np.zeros((0, width), bool)  # the strip's valid mask (host)
    valid_dev: torch.Tensor | None = None
    workspace: dict[str, torch.Tensor] = {}  # the predictor's reused batch buffers
    origin = 0  # accumulator row of band row 0

    def flush(row: int, count: int) -> None:
        """Finish band rows ``[0, count)`` (raster rows from ``row``) and zero them."""
        pieces = _ring_pieces(origin, 0, count, win_h)
        ok = torch.empty((count, width), dtype=torch.bool, device=dev)
        for acc_rows, band_rows in pieces:
            torch.logical_and(valid_dev[band_rows], acc_w[acc_rows] > 0, out=ok[band_rows])
        out = BlendedRows(row_start=row, valid=ok.cpu().numpy())
        if seg:
            cls = torch.empty((count, width), dtype=torch.uint8, device=dev)
            for acc_rows, band_rows in pieces:
                cls[band_rows] = _argmax_classes(sums[:, acc_rows])
            cls.masked_fill_(~ok, IGNORE_INDEX)
            out.classes = cls.cpu().numpy()
            if keep_probs:
                probs = torch.empty((sums.shape[0], count, width), dtype=torch.float32,
                                    device=dev)
                for acc_rows, band_rows in pieces:
                    torch.div(sums[:, acc_rows], acc_w[acc_rows], out=probs[:, band_rows])
                probs.masked_fill_(~ok, float("nan"))
                out.probs = probs.cpu().numpy()
        if hgt:
            height = torch.empty((count, width), dtype=torch.float32, device=dev)
            for acc_rows, band_rows in pieces:
                torch.div(acc_h[acc_rows], acc_w[acc_rows], out=height[band_rows])
            height.masked_fill_(~ok, float("nan"))
            out.height = height.cpu().numpy()
        sink(out)
        for acc_rows, _ in pieces:  # finished rows start the band's next rows at zero
            acc_w[acc_rows] = 0
            if acc_h is not None:
                acc_h[acc_rows] = 0
            if sums is not None:
                sums[:, acc_rows] = 0

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="semimtl-read") as pool:
        pending = pool.submit(read_strip, *plan[0])
        for k, row in enumerate(rows):
            new_pixels, new_valid = pending.result()
            if k + 1 < len(rows):
                pending = pool.submit(read_strip, *plan[k + 1])
            new = _upload(new_pixels, dev)
            if not new_valid.all():
                if fill is None:
                    fill = _fill_tensor(predictor.fill_values, new_pixels.dtype, dev)
                new = torch.where(_upload(new_valid, dev)[None], new, fill)
            start = plan[k][0] - row  # rows of the previous strip still in this one
            if strip is None or start == 0:
                strip, valid = new, new_valid
            else:
                strip = torch.cat([strip[:, -start:], new], dim=1)
                valid = np.concatenate([valid[-start:], new_valid])
            valid_dev = _upload(valid, dev)
            covered = valid.any(axis=0)
            cols = [c for c in grid.col_starts if covered[c:c + win_w].any()]
            skipped = len(grid.col_starts) - len(cols)
            if skipped and on_windows:
                on_windows(skipped)
            pieces = _ring_pieces(origin, 0, win_h, win_h)
            if not skipped:
                for acc_rows, band_rows in pieces:
                    acc_w[acc_rows].add_(full_wsum[band_rows])
            for b in range(0, len(cols), batch_size):
                chunk = cols[b:b + batch_size]
                result = predictor.forward_windows([strip[:, :, c:c + win_w] for c in chunk],
                                                   grid, workspace=workspace)
                with one_thread(dev):
                    for i, c in enumerate(chunk):
                        cs = slice(c, c + win_w)
                        for acc_rows, band_rows in pieces:
                            w = weight[band_rows]
                            if skipped:
                                acc_w[acc_rows, cs] += w
                            if seg:
                                sums[:, acc_rows, cs].addcmul_(
                                    result["probs"][i][:, band_rows], w)
                            if hgt:
                                acc_h[acc_rows, cs].addcmul_(result["height"][i][band_rows], w)
                if on_windows:
                    on_windows(len(chunk))
            with one_thread(dev):
                if k + 1 < len(rows):
                    step = rows[k + 1] - row
                    flush(row, step)
                    origin = (origin + step) % win_h
                else:
                    flush(row, grid.height - row)
