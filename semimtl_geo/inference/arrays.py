"""In-memory sliding-window inference on a ``C x H x W`` pixel array.

The same window grid, blending and model runner as the raster path
(:mod:`semimtl_geo.inference.raster`), so evaluation scores what ``predict`` writes.
"""

from collections.abc import Sequence

import numpy as np
from tqdm.auto import tqdm

from semimtl_geo.checkpoint import LoadedModel
from semimtl_geo.classes import IGNORE_INDEX
from semimtl_geo.errors import UserError
from semimtl_geo.inference.engine import BlendedRows, run_sliding_windows
from semimtl_geo.inference.predictor import WindowPredictor
from semimtl_geo.inference.scaling import array_sample, plan_mapping
from semimtl_geo.inference.windows import make_grid


def predict_array(
    loaded: LoadedModel,
    image: np.ndarray,
    valid: np.ndarray | None = None,
    *,
    patch_size: int | None = None,
    overlap: float | None = None,
    batch_size: int = 4,
    device: str = "cpu",
    tasks: Sequence[str] | str | None = None,
    progress: bool = False,
    return_probs: bool = False,
    scale: float = 1.0,
    predictor: WindowPredictor | None = None,
    rescale: str | None = None,
    value_scale: float | None = None,
    engine: str = "auto",
) -> dict[str, np.ndarray]:
    """Predict a whole image with overlapping, Hann-blended windows.

    Windows of ``patch_size`` px (default ``meta.patch_size``) overlap by ``overlap``
    (default ``meta.overlap``); the last window of each row/column is shifted inside the
    image. An image smaller than the patch along an axis uses one window spanning that
    axis, padded (edge-replicated) to a multiple of 8 (at least 32 px) for the encoder
    and cropped back, so any size from 1 px works.

    Args:
        loaded: model from :func:`semimtl_geo.checkpoint.load_model_checkpoint`.
        image: ``C x H x W`` raw pixel values (e.g. uint8), bands in ``meta.bands`` order.
        valid: ``H x W`` bool, False where there is no data (default: all valid).
            Invalid pixels are filled with the band means before the model sees them.
        patch_size: window size in model pixels.
        overlap: fraction of overlap between neighbouring windows, in ``[0, 1)``.
        batch_size: windows per forward pass.
        device: torch device (``"cpu"``, ``"cuda"``, ``"auto"``).
        tasks: subset of the model's tasks (default all).
        progress: show a tqdm bar over windows.
        return_probs: also return blended class probabilities (``K x H x W``, memory heavy).
        scale: input GSD / model GSD; windows are resized by it for the model and back.
        predictor: an existing runner to reuse (skips moving the model again).
        rescale: ``none``, ``minmax`` or ``percentile`` for an image of another dtype than
            the training pixels (:mod:`~semimtl_geo.inference.scaling`); ``None``
            refuses such images.
        value_scale: multiply the image values by this factor instead.
        engine: numeric engine of a new runner (``"auto"``, ``"eager"``, ``"bf16"``...,
            see :mod:`semimtl_geo.inference.engines`); ignored with ``predictor``.

    Returns:
        ``"class"``: uint8 ``H x W``, 255 where invalid (if seg is predicted);
        ``"probs"``: float32 ``K x H x W``, NaN where invalid (if ``return_probs``);
        ``"height"``: float32 ``H x W`` in metres (model output x ``meta.height_scale``),
        NaN where invalid (if height is predicted).

    Raises:
        UserError: wrong band count or mask shape, an image dtype other than the training
            pixels' without ``rescale``/``value_scale``.

    """
    meta = loaded.meta
    runner = predictor or WindowPredictor(loaded, device=device, tasks=tasks, engine=engine)
    if image.ndim == 2:
        image = image[None]
    if image.ndim != 3 or image.shape[0] != runner.in_channels:
        raise UserError(
            f"The image has shape {tuple(image.shape)} but the model expects "
            f"{runner.in_channels} bands ({', '.join(meta.bands)}) as C x H x W; "
            "select those bands."
        )
    _, h, w = image.shape
    if valid is None:
        valid = np.ones((h, w), dtype=bool)
    valid = np.asarray(valid, dtype=bool)
    if valid.shape != (h, w):
        raise UserError(
            f"The valid mask has shape {valid.shape}; it must match the image ({h}, {w})."
        )
    mapping = plan_mapping(image.dtype, meta.input_dtype, meta.input_range, "The image",
                           rescale, value_scale, lambda: array_sample(image, valid))
    image = mapping.apply(image)
    grid = make_grid(
        h, w,
        int(patch_size if patch_size is not None else meta.patch_size),
        float(overlap if overlap is not None else meta.overlap),
        scale,
    )
    out: dict[str, np.ndarray] = {}
    if "seg" in runner.tasks:
        out["class"] = np.full((h, w), IGNORE_INDEX, np.uint8)
        if return_probs:
            out["probs"] = np.full((runner.num_classes, h, w), np.nan, np.float32)
    if "height" in runner.tasks:
        out["height"] = np.full((h, w), np.nan, np.float32)

    def read_strip(y0: int, y1: int) -> tuple[np.ndarray, np.ndarray]:
        return image[:, y0:y1], valid[y0:y1]

    def sink(rows: BlendedRows) -> None:
        sl = slice(rows.row_start, rows.row_start + rows.valid.shape[0])
        if rows.classes is not None:
            out["class"][sl] = rows.classes
        if rows.probs is not None:
            out["probs"][:, sl] = rows.probs
        if rows.height is not None:
            out["height"][sl] = rows.height

    with tqdm(total=grid.num_windows, desc="windows", unit="win", disable=not progress,
              leave=False) as bar:
        run_sliding_windows(grid, read_strip, runner, sink, batch_size=batch_size,
                            keep_probs=return_probs, on_windows=bar.update)
    return out
