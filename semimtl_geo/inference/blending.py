"""Smooth weight windows for blending overlapping predictions without seams.

Each window's class probabilities and heights are multiplied by a separable Hann
(raised-cosine) weight ``w(i) = sin^2(pi (i + 0.5) / n)`` that is largest in the window
centre, where the network sees the most context, and falls towards the window border,
where zero padding inside the network makes predictions least reliable. Overlapping
windows are averaged with these weights (sum of ``w * p`` over sum of ``w``), so a
prediction changes smoothly across window borders instead of jumping.

The weight is floored at a small positive value so pixels on the raster border, which
only one window covers near its own border, still get a defined average.
"""

import numpy as np

#: Smallest blending weight (keeps raster-border pixels defined).
WEIGHT_FLOOR = 1e-3


def hann_1d(n: int) -> np.ndarray:
    """Hann weights of length ``n`` with no zero at either end (float32)."""
    i = np.arange(n, dtype=np.float64)
    w = np.sin(np.pi * (i + 0.5) / n) ** 2
    return np.maximum(w, WEIGHT_FLOOR).astype(np.float32)


def hann_2d(h: int, w: int) -> np.ndarray:
    """Separable 2-D Hann weight window ``h x w`` (float32)."""
    return np.outer(hann_1d(h), hann_1d(w)).astype(np.float32)
