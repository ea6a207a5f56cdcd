"""``OUT/<dataset>/preview.png``: image, labels and nDSM of one prepared tile."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import rasterio

from semimtl_geo.atomic import atomic_output
from semimtl_geo.data import isprs
from semimtl_geo.outputs import SOFTWARE


def write_preview(out: Path, dataset: str, record: dict[str, Any], max_px: int = 600) -> Path:
    """Save ``OUT/<dataset>/preview.png``: image, labels and nDSM of one prepared tile."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with rasterio.open(out / record["image"]) as src:
        step = max(1, math.ceil(max(src.width, src.height) / max_px))
        shape = (max(1, src.height // step), max(1, src.width // step))
        n = min(3, src.count)
        image = src.read(indexes=list(range(1, n + 1)), out_shape=(n, *shape))
    with rasterio.open(out / record["label"]) as src:
        labels = src.read(1, out_shape=shape)
    panels = [(np.moveaxis(image, 0, -1), "image (first 3 bands)"),
              (isprs.CLASSES.colorize(labels), "labels (black = ignore)")]
    if record.get("ndsm"):
        with rasterio.open(out / record["ndsm"]) as src:
            panels.append((src.read(1, out_shape=shape), "nDSM (normalised)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4.8))
    for ax, (arr, title) in zip(np.atleast_1d(axes), panels):
        im = ax.imshow(arr, interpolation="nearest")
        ax.set_title(title)
        ax.set_axis_off()
        if arr.ndim == 2:
            fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle(f"{dataset} tile {record['tile_id']} ({record['split']}), "
                 f"{record['width']}x{record['height']} px")
    fig.tight_layout()
    path = out / dataset / "preview.png"
    try:
        with atomic_output(path, suffix=".partial") as tmp:
            fig.savefig(tmp, format="png", dpi=80, metadata={"Software": SOFTWARE})
    finally:
        plt.close(fig)
    return path
