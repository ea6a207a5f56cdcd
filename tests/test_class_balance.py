"""Median-frequency class weights (loss.seg_class_weights) from prepared tiles."""

import math

import numpy as np
import pytest

from semimtl_geo.data.isprs.class_balance import class_pixel_counts, median_frequency_weights
from semimtl_geo.errors import UserError


def test_median_frequency_weights_hand_worked() -> None:
    counts = np.array([50, 30, 15, 5, 0])  # shares 0.5, 0.3, 0.15, 0.05; median 0.225
    full = median_frequency_weights(counts, power=1.0)
    assert full == pytest.approx([0.45, 0.75, 1.5, 4.5, 1.0], abs=5e-4)
    soft = median_frequency_weights(counts)  # the square root
    assert soft == pytest.approx([math.sqrt(w) for w in (0.45, 0.75, 1.5, 4.5)] + [1.0],
                                 abs=5e-4)
    assert median_frequency_weights(counts, power=0.0) == [1.0] * 5
    with pytest.raises(ValueError, match="No labelled pixel"):
        median_frequency_weights(np.zeros(3))
    with pytest.raises(ValueError, match="power"):
        median_frequency_weights(counts, power=-1)


def test_class_pixel_counts_read_the_training_masks(tmp_path) -> None:
    from semimtl_geo.cli.main import main

    raw, prepared = tmp_path / "raw", tmp_path / "prepared"
    assert main(["synthesize-isprs", "-o", str(raw), "--size-potsdam", "120",
                 "--size-vaihingen", "80", "--tiles-potsdam", "2", "--tiles-vaihingen", "2"]) == 0
    assert main(["prepare-isprs", "--potsdam", str(raw / "potsdam"), "--vaihingen",
                 str(raw / "vaihingen"), "-o", str(prepared), "--gsd", "0.25"]) == 0
    from semimtl_geo.data import list_isprs_tiles, read_isprs_tile

    expected = np.zeros(6, dtype=np.int64)
    for record in list_isprs_tiles(prepared, "potsdam", "train"):
        mask = read_isprs_tile(record).mask
        for c in range(6):
            expected[c] += int((mask == c).sum())
    counts = class_pixel_counts(prepared, "potsdam", 6)
    assert counts.tolist() == expected.tolist() and counts.sum() > 0
    with pytest.raises(UserError, match="class id"):
        class_pixel_counts(prepared, "potsdam", 2)
