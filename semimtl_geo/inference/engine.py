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
On the CPU the softmax, the blending and the finishing of rows run on one torch thread
(:func:`~semimtl_geo.inference.predictor.one_thread`): many short memory-bound operations
on cores other jobs share spent more time waiting for a descheduled second thread than
they saved. They run in a background thread (:class:`_Worker`), in the order they were
queued, while the main thread runs the next batch through the model (two sets of batch
buffers alternate; :meth:`WindowPredictor.run_model` here,
:meth:`WindowPredictor.finish_outputs` there); the rows reach the sink from that thread.
A light network (:attr:`WindowPredictor.light`: fewer than
:data:`~semimtl_geo.inference.predictor.LIGHT_MACS_PER_PIXEL` multiply-accumulates per
pixel, about the blending's own cost) gets the other torch threads
(:func:`~semimtl_geo.inference.predictor.model_threads`: ``threads - 1``, at least one), so
its parallel operations never wait for a thread that shares a core with the blending;
6000 x 6000 stand-in, 2 threads: 3.1x main b845855 by wall, against 2.6x with the softmax
in the main thread and the model on both threads. Heavier networks keep every thread.

Nodata pixels (``valid == False``) are filled with the band means (the raw value that
normalises to 0) before the model sees them, so nodata never reaches the model as
zeros; they come out as class 255 and height NaN. Windows with no valid pixel are
skipped.
"""

from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from semimtl_geo.inference.blending import hann_1d, hann_2d
from semimtl_geo.inference.predictor import WindowPredictor, model_threads, one_thread
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
    """``array`` as a tensor on ``device`` (through pinned memory on CUDA; no copy on the CPU)."""
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)  # a no-op on the CPU; MPS needs the copy (it did not get one)


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

    The maximum first, then for each class from ``K - 2`` down to 0 an equality mask
    turned into ``k`` where equal and 255 elsewhere (``(eq - 1) | k`` in uint8), kept by an
    element-wise minimum: the lowest class equal to the maximum, else ``K - 1`` (also
    where the maximum is NaN). Every step is a vectorised uint8 or float operation; the
    masked fills used before are scalar loops (36 ms vs 6 ms for 6 x 256 x 6000 on
    one thread, identical classes). On the CPU the steps run in NumPy (``np.equal`` into
    a bool buffer is 4x faster than torch's), elsewhere in torch on the device.
    """
    if sums.device.type == "cpu":
        return _argmax_classes_numpy(sums)
    return _argmax_classes_torch(sums)


def _argmax_classes_numpy(sums: torch.Tensor) -> torch.Tensor:
    """:func:`_argmax_classes` of CPU tensors, in NumPy."""
    num = sums.shape[0]
    values, top = sums.numpy(), sums.amax(0).numpy()
    classes = np.full(top.shape, num - 1, np.uint8)
    equal = np.empty(top.shape, bool)
    mark = equal.view(np.uint8)
    for k in range(num - 2, -1, -1):
        np.equal(values[k], top, out=equal)
        np.subtract(mark, 1, out=mark)  # equal -> 0, else 255
        np.bitwise_or(mark, k, out=mark)  # equal -> k, else 255
        np.minimum(classes, mark, out=classes)
    return torch.from_numpy(classes)


def _argmax_classes_torch(sums: torch.Tensor) -> torch.Tensor:
    """:func:`_argmax_classes` in torch on any device."""
    num = sums.shape[0]
    best = sums.amax(0)
    classes = torch.full(best.shape, num - 1, dtype=torch.uint8, device=sums.device)
    equal = torch.empty(best.shape, dtype=torch.bool, device=sums.device)
    mark = equal.view(torch.uint8)
    for k in range(num - 2, -1, -1):
        torch.eq(sums[k], best, out=equal)
        mark.sub_(1).bitwise_or_(k)
        torch.minimum(classes, mark, out=classes)
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
    acc = _Accumulators(grid, predictor, sink, keep_probs)
    rows = grid.row_starts
    plan = _read_plan(grid)
    win_h, win_w = grid.win_h, grid.win_w
    fill: torch.Tensor | None = None
    # the first window row's read starts at its own row (start == 0), which sets both
    strip: torch.Tensor  # C x win_h x W on the device, nodata filled
    valid: np.ndarray  # the strip's valid mask (host)
    # The predictor's reused batch buffers, two sets: the model fills one while the
    # blending thread still reads the other.
    workspaces: list[dict[str, torch.Tensor]] = [{}, {}]
    slot_users: list[Future | None] = [None, None]
    origin = 0  # accumulator row of band row 0 (the blending thread's order, known here)
    batches = 0
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="semimtl-read") as reader, \
            _Worker(dev) as blender, \
            model_threads(dev, predictor.light):
        pending = reader.submit(read_strip, *plan[0])
        for k, row in enumerate(rows):
            new_pixels, new_valid = pending.result()
            if k + 1 < len(rows):
                pending = reader.submit(read_strip, *plan[k + 1])
            new = _upload(new_pixels, dev)
            if not new_valid.all():
                if fill is None:
                    fill = _fill_tensor(predictor.fill_values, new_pixels.dtype, dev)
                new = torch.where(_upload(new_valid, dev)[None], new, fill)
            start = plan[k][0] - row  # rows of the previous strip still in this one
            if start == 0:  # the first strip, or no row kept from the previous one
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
                blender.submit(acc.add_full_weights, pieces)
            for b in range(0, len(cols), batch_size):
                chunk = cols[b:b + batch_size]
                slot = batches % 2
                batches += 1
                if slot_users[slot] is not None:  # its previous batch is blended
                    slot_users[slot].result()
                raw = predictor.run_model([strip[:, :, c:c + win_w] for c in chunk], grid,
                                          workspace=workspaces[slot])
                slot_users[slot] = blender.submit(acc.blend_raw, raw, workspaces[slot], chunk,
                                                  pieces, bool(skipped))
                if on_windows:
                    on_windows(len(chunk))
            if k + 1 < len(rows):
                step = rows[k + 1] - row
                blender.submit(acc.flush, row, step, origin, valid_dev)
                origin = (origin + step) % win_h
            else:
                blender.submit(acc.flush, row, grid.height - row, origin, valid_dev)


class _Worker:
    """One background thread running the blending and row finishing in order.

    Tasks run one at a time in submission order, so the accumulators see exactly the
    operations, in the same order, as when they ran inline: results are unchanged. The
    thread overlaps them with the next batch's model call (on the CPU the blending is
    single-threaded work that otherwise leaves a core idle; on CUDA it queues kernels on
    the same default stream). Each task runs under ``inference_mode`` (thread-local) and,
    on the CPU, on one torch thread (:func:`one_thread`). The first error of a task is
    raised in the caller at its next :meth:`submit` or on leaving the ``with`` block, and
    the tasks queued behind it do nothing; leaving it with an exception cancels the tasks
    not yet started and waits for the running one, so nothing writes after the caller has
    moved on.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="semimtl-blend")
        self.futures: deque[Future] = deque()
        #: Set by the first task that fails: the tasks queued behind it are skipped, so no
        #: later row reaches the sink between the error and the caller noticing it.
        self.failed = False

    def _run(self, fn: Callable[..., None], *args: object) -> None:
        if self.failed:
            return
        try:
            with torch.inference_mode(), one_thread(self.device):
                fn(*args)
        except BaseException:
            self.failed = True
            raise

    def submit(self, fn: Callable[..., None], *args: object) -> Future:
        """Queue ``fn(*args)``; first raise the error of any task already finished."""
        while self.futures and self.futures[0].done():
            self.futures.popleft().result()
        future = self.pool.submit(self._run, fn, *args)
        self.futures.append(future)
        return future

    def __enter__(self) -> "_Worker":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: object) -> None:
        if exc_type is not None:
            self.failed = True  # a task already queued does nothing once the caller failed
        try:
            if exc_type is None:
                while self.futures:
                    self.futures.popleft().result()
        finally:
            self.pool.shutdown(cancel_futures=True)  # waits for the running task


class _Accumulators:
    """Ring accumulators of one band of rows, and the three operations on them.

    See the module docstring: band row ``i`` is accumulator row ``(origin + i) % win_h``;
    the caller tracks ``origin`` and passes it (with the ring pieces) to each operation.
    """

    def __init__(self, grid: WindowGrid, predictor: WindowPredictor, sink: RowSink,
                 keep_probs: bool) -> None:
        dev = self.device = predictor.device
        self.predictor, self.grid = predictor, grid
        self.seg, self.hgt = "seg" in predictor.tasks, "height" in predictor.tasks
        self.sink, self.keep_probs = sink, keep_probs
        self.width, self.win_h, self.win_w = grid.width, grid.win_h, grid.win_w
        width, win_h, win_w = grid.width, grid.win_h, grid.win_w
        self.weight = torch.from_numpy(hann_2d(win_h, win_w)).to(dev)
        self.acc_w = torch.zeros((win_h, width), dtype=torch.float32, device=dev)
        self.sums = (torch.zeros((predictor.num_classes, win_h, width), dtype=torch.float32,
                                 device=dev) if self.seg else None)
        self.acc_h = (torch.zeros((win_h, width), dtype=torch.float32, device=dev)
                      if self.hgt else None)
        # The weight sum of a full row of windows is separable: a(i) x sum_c b(j - c).
        weight_1d = torch.from_numpy(hann_1d(win_w)).to(dev)
        full_cover = torch.zeros(width, dtype=torch.float32, device=dev)
        for c in grid.col_starts:
            full_cover[c:c + win_w] += weight_1d
        self.full_wsum = torch.outer(torch.from_numpy(hann_1d(win_h)).to(dev), full_cover)

    def add_full_weights(self, pieces: list[tuple[slice, slice]]) -> None:
        """Add the weights of a complete row of windows (no window skipped)."""
        for acc_rows, band_rows in pieces:
            self.acc_w[acc_rows].add_(self.full_wsum[band_rows])

    def blend_raw(self, raw: dict[str, torch.Tensor], workspace: dict[str, torch.Tensor],
                  chunk: list[int], pieces: list[tuple[slice, slice]], skipped: bool) -> None:
        """:meth:`blend` of a batch's raw network outputs (softmax and scaling here first)."""
        self.blend(self.predictor.finish_outputs(raw, self.grid, workspace), chunk, pieces,
                   skipped)

    def blend(self, result: dict[str, torch.Tensor], chunk: list[int],
              pieces: list[tuple[slice, slice]], skipped: bool) -> None:
        """Add a batch's weighted outputs at columns ``chunk`` (and weights if ``skipped``)."""
        for i, c in enumerate(chunk):
            cs = slice(c, c + self.win_w)
            for acc_rows, band_rows in pieces:
                w = self.weight[band_rows]
                if skipped:
                    self.acc_w[acc_rows, cs] += w
                if self.sums is not None:
                    self.sums[:, acc_rows, cs].addcmul_(result["probs"][i][:, band_rows], w)
                if self.acc_h is not None:
                    self.acc_h[acc_rows, cs].addcmul_(result["height"][i][band_rows], w)

    def flush(self, row: int, count: int, origin: int, valid_dev: torch.Tensor) -> None:
        """Finish band rows ``[0, count)`` (raster rows from ``row``), sink and zero them."""
        dev, width, sums, acc_w, acc_h = self.device, self.width, self.sums, self.acc_w, self.acc_h
        pieces = _ring_pieces(origin, 0, count, self.win_h)
        ok = torch.empty((count, width), dtype=torch.bool, device=dev)
        for acc_rows, band_rows in pieces:
            torch.logical_and(valid_dev[band_rows], acc_w[acc_rows] > 0, out=ok[band_rows])
        out = BlendedRows(row_start=row, valid=ok.cpu().numpy())
        if sums is not None:
            cls = torch.empty((count, width), dtype=torch.uint8, device=dev)
            for acc_rows, band_rows in pieces:
                cls[band_rows] = _argmax_classes(sums[:, acc_rows])
            # ok - 1 (uint8) is 0 where valid, 255 (classes.IGNORE_INDEX) where not; vectorised,
            # unlike masked_fill_
            cls.bitwise_or_(ok.view(torch.uint8) - 1)
            out.classes = cls.cpu().numpy()
            if self.keep_probs:
                probs = torch.empty((sums.shape[0], count, width), dtype=torch.float32,
                                    device=dev)
                for acc_rows, band_rows in pieces:
                    torch.div(sums[:, acc_rows], acc_w[acc_rows], out=probs[:, band_rows])
                probs.masked_fill_(~ok, float("nan"))
                out.probs = probs.cpu().numpy()
        if acc_h is not None:
            height = torch.empty((count, width), dtype=torch.float32, device=dev)
            for acc_rows, band_rows in pieces:
                torch.div(acc_h[acc_rows], acc_w[acc_rows], out=height[band_rows])
            height.masked_fill_(~ok, float("nan"))
            out.height = height.cpu().numpy()
        self.sink(out)
        for acc_rows, _ in pieces:  # finished rows start the band's next rows at zero
            acc_w[acc_rows].zero_()
            if acc_h is not None:
                acc_h[acc_rows].zero_()
            if sums is not None:
                sums[:, acc_rows].zero_()
