"""Class frequencies of prepared tiles and median-frequency balancing weights.

Median-frequency balancing (Eigen & Fergus, ICCV 2015, section 4.1) weights class ``c`` of
the cross-entropy by ``median(f) / f_c``, where ``f_c`` is the class's share of the
labelled training pixels (here over all training pixels, not only over the tiles that
contain the class), so rare classes (ISPRS cars and clutter, 1-3 % of the pixels) count
as much as common ones. ``power`` softens it: 0.5 (the square root) is what the demo uses.
The weights feed ``loss.seg_class_weights`` (:class:`semimtl_geo.training.config.LossConfig`).
"""

from pathlib import Path

import numpy as np
import rasterio

from semimtl_geo.classes import IGNORE_INDEX
from semimtl_geo.data.isprs.loaders import list_isprs_tiles
from semimtl_geo.errors import UserError


def class_pixel_counts(
    prepared_root: str | Path, dataset: str, num_classes: int, split: str = "train"
) -> np.ndarray:
    """Count the pixels of each class in one dataset's prepared tiles (ignored pixels not).

    Raises:
        UserError: the dataset has no class labels, or a label is outside the table.

    """
    counts = np.zeros(num_classes, dtype=np.int64)
    for record in list_isprs_tiles(prepared_root, dataset, split):
        if record.mask_path is None:
            raise UserError(
                f"Dataset '{dataset}' has no class labels in '{prepared_root}', so it has no "
                "class frequencies; balance the classes of a labelled dataset."
            )
        with rasterio.open(record.mask_path) as src:  # the mask only, not image or height
            mask = src.read(1)
        labels = mask[mask != IGNORE_INDEX].ravel()
        if labels.size and int(labels.max()) >= num_classes:
            raise UserError(
                f"Tile {record.tile_id} of '{dataset}' holds class id {int(labels.max())}, "
                f"outside the {num_classes}-class table; prepare the data again."
            )
        counts += np.bincount(labels, minlength=num_classes)
    return counts


def median_frequency_weights(counts: np.ndarray, power: float = 0.5) -> list[float]:
    """Return ``(median(f) / f_c) ** power`` per class, rounded to 3 decimals.

    ``f`` are the shares of the classes present in ``counts``; an absent class gets 1.0
    (it receives no supervised gradient either way).

    Raises:
        ValueError: no labelled pixel at all, or a negative power.

    """
    counts = np.asarray(counts, dtype=np.float64)
    if power < 0:
        raise ValueError(f"power must be >= 0, got {power}.")
    total = counts.sum()
    if total <= 0:
        raise ValueError("No labelled pixel to compute class frequencies from.")
    present = counts > 0
    freqs = counts / total
    median = float(np.median(freqs[present]))
    weights = np.ones_like(freqs)
    weights[present] = (median / freqs[present]) ** power
    return [round(float(w), 3) for w in weights]
