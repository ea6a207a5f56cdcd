"""Input pixel values against the value range the model was trained on.

A checkpoint records the dtype and value range of its training pixels
(:attr:`~semimtl_geo.checkpoint.ModelMeta.input_dtype`,
:attr:`~semimtl_geo.checkpoint.ModelMeta.input_range`; ``uint8`` 0-255 for every dataset
kind shipped, and for checkpoints older than these fields). The network normalises
``pixel / 255``, so a 12-bit raster stored as uint16 or a 0-1 float reflectance raster fed
unchanged gives confident garbage (a 12-bit copy of a tile came out 100 % "tree" with a
mean height of 933 m). Inputs of another dtype are therefore refused in one sentence
unless the user says how to map them:

* ``--rescale percentile``: per band, the 2nd-98th percentile of the input's valid pixels
  is stretched linearly to the training range and clipped (robust to outliers);
* ``--rescale minmax``: per band, the input's valid minimum-maximum is stretched to the
  training range;
* ``--scale F``: every value is multiplied by ``F`` and clipped to the training range
  (``--scale 0.0625`` for 12-bit data, ``--scale 255`` for 0-1 reflectances);
* ``--rescale none``: values are used unchanged (you know they are on the training scale).

Statistics come from the whole raster read decimated to at most :data:`STATS_SIDE`
pixels per side (GDAL uses overviews when present), valid pixels only, so every window
of a raster gets the same mapping and no seams appear between windows.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from semimtl_geo.errors import UserError

if TYPE_CHECKING:
    from semimtl_geo.inference.raster_io import RasterInput

#: ``--rescale`` choices.
RESCALE_MODES = ("none", "minmax", "percentile")
#: Percentiles stretched to the training range by ``--rescale percentile``.
PERCENTILES = (2.0, 98.0)
#: Longest side of the decimated read the statistics come from.
STATS_SIDE = 1024


@dataclass(frozen=True)
class ValueMapping:
    """How raw input values become values on the model's training scale.

    ``out = clip((x - offset) * gain + shift, lo, hi)`` per band (arrays broadcast over
    bands); the identity mapping (``gain is None``) returns the pixels untouched.
    """

    description: str = "unchanged"
    offset: np.ndarray | None = None
    gain: np.ndarray | None = None
    shift: float = 0.0
    lo: float = 0.0
    hi: float = 255.0

    @property
    def identity(self) -> bool:
        """Whether the values are passed through unchanged."""
        return self.gain is None

    def apply(self, pixels: np.ndarray) -> np.ndarray:
        """Map ``C x ...`` pixels (float32 out, unless the mapping is the identity)."""
        if self.gain is None or self.offset is None:
            return pixels
        shape = (-1,) + (1,) * (pixels.ndim - 1)
        out = (pixels.astype(np.float32) - self.offset.reshape(shape)) * self.gain.reshape(shape)
        out += self.shift
        return np.clip(out, self.lo, self.hi, out=out)


def _dtype_advice(dtype: np.dtype) -> str:
    if np.issubdtype(dtype, np.floating):
        return "--scale 255 for reflectances in 0-1"
    return "--scale 0.0625 for 12-bit values"


def plan_mapping(
    dtype: str | np.dtype,
    train_dtype: str,
    train_range: tuple[float, float] | list[float],
    name: str,
    rescale: str | None,
    value_scale: float | None,
    sample: Callable[[], np.ndarray],
) -> ValueMapping:
    """Decide how an input's values are mapped to the model's training range.

    Args:
        dtype: the input's pixel dtype.
        train_dtype: dtype the model was trained on (``meta.input_dtype``).
        train_range: ``(lo, hi)`` of the training values (``meta.input_range``).
        name: the input's name, for messages.
        rescale: ``None``, or one of :data:`RESCALE_MODES`.
        value_scale: ``--scale`` factor, or ``None``.
        sample: returns ``C x N`` valid pixel values (called only for minmax/percentile).

    Returns:
        The mapping to apply to every strip of the input.

    Raises:
        UserError: another dtype without an option, contradicting options, a bad factor.

    """
    lo, hi = (float(v) for v in train_range)
    dtype = np.dtype(dtype)
    if rescale is not None and rescale not in RESCALE_MODES:
        raise UserError(
            f"--rescale '{rescale}' is unknown; use one of {', '.join(RESCALE_MODES)}."
        )
    if value_scale is not None:
        if rescale not in (None, "none"):
            raise UserError(
                f"--scale and --rescale {rescale} both map the input values; pass only one."
            )
        if not (np.isfinite(value_scale) and value_scale > 0):
            raise UserError(f"--scale must be a positive number, got {value_scale}.")
        return ValueMapping(
            f"multiplied by {value_scale:g} and clipped to {lo:g}-{hi:g}",
            offset=np.zeros(1, np.float32), gain=np.full(1, value_scale, np.float32),
            lo=lo, hi=hi,
        )
    if rescale == "none":
        return ValueMapping("unchanged (--rescale none)")
    if rescale is None:
        if dtype == np.dtype(train_dtype):
            return ValueMapping()
        raise UserError(
            f"'{name}' holds {dtype.name} values but the model was trained on {train_dtype} "
            f"values {lo:g}-{hi:g}; pass --rescale percentile or --rescale minmax to stretch "
            f"each band to that range, --scale F to multiply the values (e.g. "
            f"{_dtype_advice(dtype)}), or --rescale none to use them unchanged."
        )
    values = sample()
    if values.size == 0:
        raise UserError(
            f"'{name}' has no valid pixels to compute --rescale {rescale} statistics from."
        )
    values = values.astype(np.float64)
    if rescale == "minmax":
        low, high = values.min(axis=1), values.max(axis=1)
    else:
        low, high = np.percentile(values, PERCENTILES, axis=1)
    span = np.maximum(high - low, 1e-12)
    ranges = ", ".join(f"{a:.4g}-{b:.4g}" for a, b in zip(low, high))
    return ValueMapping(
        f"stretched per band from {ranges} ({rescale}) to {lo:g}-{hi:g}",
        offset=low.astype(np.float32), gain=((hi - lo) / span).astype(np.float32), shift=lo,
        lo=lo, hi=hi,
    )


def array_sample(image: np.ndarray, valid: np.ndarray | None, limit: int = 1_000_000
                 ) -> np.ndarray:
    """``C x N`` valid, finite values of an in-memory ``C x H x W`` image (subsampled)."""
    flat = image.reshape(image.shape[0], -1)
    keep = np.ones(flat.shape[1], bool) if valid is None else np.asarray(valid).reshape(-1)
    if np.issubdtype(flat.dtype, np.floating):
        keep = keep & np.isfinite(flat).all(axis=0)
    values = flat[:, keep]
    step = max(1, values.shape[1] // limit)
    return values[:, ::step]


def raster_sample(src: "RasterInput") -> np.ndarray:
    """``C x N`` valid values of the selected bands, read decimated (see module docstring).

    Raises:
        UserError: the raster's data cannot be read.

    """
    import rasterio.errors
    from rasterio.enums import Resampling

    from semimtl_geo.inference.sources import source_name

    factor = max(1.0, max(src.height, src.width) / STATS_SIDE)
    shape = (max(1, round(src.height / factor)), max(1, round(src.width / factor)))
    try:
        pixels = src.src.read(indexes=src.bands, out_shape=(len(src.bands), *shape),
                              resampling=Resampling.nearest)
        valid = src.src.dataset_mask(out_shape=shape, resampling=Resampling.nearest) > 0
    except (rasterio.errors.RasterioError, OSError) as exc:
        raise UserError(
            f"'{source_name(src.path)}' could not be read to compute its value statistics "
            f"({str(exc).splitlines()[0][:120]}); the file is damaged: re-download or "
            "re-export it."
        ) from None
    return array_sample(pixels, valid)
