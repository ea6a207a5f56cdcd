"""PNG previews of training progress: image, ground truth and prediction per dataset."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from semimtl_geo.atomic import atomic_output
from semimtl_geo.classes import ClassTable
from semimtl_geo.outputs import SOFTWARE


@dataclass
class PreviewRow:
    """One dataset's first sample of a batch (CPU numpy arrays).

    Attributes:
        image: ``C x H x W`` float pixels in [0, 1] (de-normalised).
        mask / pred_class: ``H x W`` class ids (``None`` when absent).
        height / pred_height: ``H x W`` heights in metres (``None`` when absent).

    """

    name: str
    image: np.ndarray
    mask: np.ndarray | None
    pred_class: np.ndarray | None
    height: np.ndarray | None
    pred_height: np.ndarray | None


def save_preview(
    path: str | Path, rows: list[PreviewRow], classes: ClassTable, title: str = ""
) -> Path:
    """Write a grid (rows = datasets; columns = image, GT/pred class, GT/pred height)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    heights = [a for r in rows for a in (r.height, r.pred_height) if a is not None]
    finite = (
        np.concatenate([h[np.isfinite(h)].ravel() for h in heights]) if heights else np.zeros(1)
    )
    vmax = float(np.percentile(finite, 99)) if finite.size else 1.0
    vmax = vmax if vmax > 0 else 1.0
    cols = ["image", "GT class", "pred class", "GT height (m)", "pred height (m)"]
    fig, axes = plt.subplots(
        len(rows), len(cols), figsize=(2.4 * len(cols), 2.4 * len(rows)), squeeze=False
    )
    for r, row in enumerate(rows):
        img = np.clip(np.moveaxis(row.image[:3], 0, -1), 0, 1)
        panels = [
            img,
            None if row.mask is None else classes.colorize(row.mask),
            None if row.pred_class is None else classes.colorize(row.pred_class),
            row.height,
            row.pred_height,
        ]
        for c, panel in enumerate(panels):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(cols[c], fontsize=8)
            if c == 0:
                ax.set_ylabel(row.name, fontsize=8)
            if panel is None:
                ax.text(
                    0.5,
                    0.5,
                    "no label" if c in (1, 3) else "-",
                    ha="center",
                    va="center",
                    fontsize=8,
                )
                continue
            if c >= 3:
                ax.imshow(panel, cmap="viridis", vmin=0, vmax=vmax)
            else:
                ax.imshow(panel)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    try:
        with atomic_output(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=80, metadata={"Software": SOFTWARE})
    finally:
        plt.close(fig)
    return path
