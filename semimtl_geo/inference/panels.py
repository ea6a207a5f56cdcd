"""PNG panels that put a tile's input, reference and predictions side by side.

Used by the demo and the examples: one row per dataset with the input composite, the
reference classes, the predicted classes, the reference height and the predicted height
(metres, shared colour scale per row).
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from semimtl_geo.atomic import atomic_output
from semimtl_geo.classes import IGNORE_INDEX, ClassTable


@dataclass
class PanelRow:
    """One dataset's tile: arrays already on the same grid.

    Attributes:
        title: row label (dataset and tile id).
        image: uint8 CxHxW input (the first three bands are shown as a composite).
        mask: reference class ids or None; predicted: predicted class ids or None.
        height: reference height in metres or None; predicted_height likewise.

    """

    title: str
    image: np.ndarray
    mask: np.ndarray | None
    predicted: np.ndarray | None
    height: np.ndarray | None
    predicted_height: np.ndarray | None


def colourise(classes: np.ndarray, table: ClassTable) -> np.ndarray:
    """Map class ids to RGB (ignore/nodata 255 shown black)."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    for i, colour in enumerate(table.colors):
        lut[i] = colour
    lut[IGNORE_INDEX] = (0, 0, 0)
    return lut[classes.astype(np.uint8)]


def _composite(image: np.ndarray) -> np.ndarray:
    rgb = image[:3] if image.shape[0] >= 3 else np.repeat(image[:1], 3, axis=0)
    return np.moveaxis(rgb, 0, -1).astype(np.uint8)


def write_panel(rows: list[PanelRow], table: ClassTable, path: str | Path, unit: str = "m") -> Path:
    """Draw the rows to ``path`` (PNG, written atomically) and return it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    titles = ["input", "reference classes", "predicted classes", "reference height",
              "predicted height"]
    fig, axes = plt.subplots(len(rows), 5, figsize=(17, 3.6 * len(rows)), squeeze=False)
    for r, row in enumerate(rows):
        finite = [h for h in (row.height, row.predicted_height) if h is not None]
        vmax = max((float(np.nanmax(h)) for h in finite if np.isfinite(h).any()), default=1.0)
        panels = [
            ("rgb", _composite(row.image)),
            ("cls", row.mask),
            ("cls", row.predicted),
            ("h", row.height),
            ("h", row.predicted_height),
        ]
        for c, (kind, data) in enumerate(panels):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{row.title}: {titles[c]}" if c == 0 else titles[c], fontsize=9)
            if data is None:
                ax.text(0.5, 0.5, "no labels", ha="center", va="center", transform=ax.transAxes)
                continue
            if kind == "rgb":
                ax.imshow(data)
            elif kind == "cls":
                ax.imshow(colourise(data, table), interpolation="nearest")
            else:
                im = ax.imshow(data, cmap="viridis", vmin=0, vmax=max(vmax, 1e-6))
                fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02, label=unit)
    handles = [
        Patch(facecolor=np.array(c) / 255, edgecolor="black", label=n)
        for n, c in zip(table.names, table.colors)
    ]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    path = Path(path)
    try:
        with atomic_output(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=90)
    finally:
        plt.close(fig)
    return path
