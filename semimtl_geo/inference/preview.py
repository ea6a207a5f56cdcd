"""PNG quicklook of a prediction: input, classes and heights side by side.

Rasters are read decimated (at most ``max_side`` px on the long side, GDAL picks
overviews when present), so previews of city-sized mosaics stay cheap.
"""

from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling

from semimtl_geo.atomic import atomic_output
from semimtl_geo.classes import IGNORE_INDEX, ClassTable
from semimtl_geo.outputs import SOFTWARE


def _shape(height: int, width: int, max_side: int) -> tuple[int, int]:
    factor = max(1.0, max(height, width) / max_side)
    return max(1, int(round(height / factor))), max(1, int(round(width / factor)))


def _stretch(image: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Per-band 2-98 % stretch to [0, 1] (``H x W x C``)."""
    out = np.zeros(image.shape, np.float32)
    for b in range(image.shape[-1]):
        band = image[..., b].astype(np.float32)
        values = band[valid] if valid.any() else band.ravel()
        lo, hi = np.percentile(values, [2, 98]) if values.size else (0.0, 1.0)
        out[..., b] = np.clip((band - lo) / max(hi - lo, 1e-6), 0, 1)
    return out


def write_preview(
    path: str | Path,
    input_path: str | Path,
    bands: list[int],
    classes: ClassTable,
    class_path: str | Path | None,
    height_path: str | Path | None,
    unit: str = "m",
    max_side: int = 800,
) -> Path:
    """Write the quicklook PNG atomically.

    Args:
        path: output PNG.
        input_path: the input raster.
        bands: 1-based input bands fed to the model (the first three are shown).
        classes: class names/colours for the legend.
        class_path: class GeoTIFF (or ``None``).
        height_path: height GeoTIFF (or ``None``).
        unit: height unit for the colour bar.
        max_side: longest side of each panel, in pixels.

    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    path = Path(path)
    panels = 1 + (class_path is not None) + (height_path is not None)
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 5), squeeze=False)
    axes = list(axes[0])
    with rasterio.open(input_path) as src:
        shape = _shape(src.height, src.width, max_side)
        show = bands[:3] if len(bands) >= 3 else bands[:1]
        image = src.read(show, out_shape=(len(show), *shape), resampling=Resampling.nearest)
        mask = src.dataset_mask(out_shape=shape, resampling=Resampling.nearest) > 0
    rgb = _stretch(np.moveaxis(image, 0, -1), mask)
    ax = axes.pop(0)
    ax.imshow(rgb if rgb.shape[-1] == 3 else rgb[..., 0], cmap="gray")
    ax.set_title(f"input (bands {','.join(map(str, show))})")
    if class_path is not None:
        with rasterio.open(class_path) as src:
            cls = src.read(1, out_shape=shape, resampling=Resampling.nearest)
        colors = np.asarray(classes.colors, np.float32) / 255.0
        rgba = np.zeros((*cls.shape, 4), np.float32)
        ok = cls != IGNORE_INDEX
        rgba[ok, :3] = classes.colorize(cls[ok]) / 255.0
        rgba[ok, 3] = 1.0
        ax = axes.pop(0)
        ax.imshow(rgba, cmap=ListedColormap(colors))
        ax.set_title("class")
        ax.legend(handles=[Patch(color=c, label=n) for n, c in zip(classes.names, colors)],
                  loc="lower right", fontsize=7, framealpha=0.8)
    if height_path is not None:
        with rasterio.open(height_path) as src:
            hgt = src.read(1, out_shape=shape, resampling=Resampling.nearest, masked=True)
        ax = axes.pop(0)
        im = ax.imshow(hgt.astype(np.float32).filled(np.nan), cmap="viridis")
        fig.colorbar(im, ax=ax, fraction=0.046, label=f"height ({unit})")
        ax.set_title("height")
    for ax in fig.axes:
        if ax.get_label() != "<colorbar>":
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    try:
        with atomic_output(path, suffix=".partial.png") as tmp:
            fig.savefig(tmp, dpi=100, metadata={"Software": SOFTWARE})
    finally:
        plt.close(fig)
    return path
