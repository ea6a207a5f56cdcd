import math

import numpy as np
import pytest
import torch

from semimtl_geo.metrics import HeightMetrics, SegmentationMetrics, delta_m


def test_segmentation_metrics_hand_worked_with_ignore_and_absent_class() -> None:
    target = np.array([[0, 0, 1], [1, 255, 2]])
    pred = np.array([[0, 1, 1], [1, 0, 0]])
    m = SegmentationMetrics(num_classes=4)
    m.update(pred, target)
    r = m.compute()
    assert r["pixels"] == 5
    assert r["pAcc"] == pytest.approx(60.0)
    assert r["IoU"][0] == pytest.approx(100 / 3)
    assert r["IoU"][1] == pytest.approx(200 / 3)
    assert r["IoU"][2] == pytest.approx(0.0)
    assert r["IoU"][3] is None  # absent from truth and prediction: no IoU, not 0
    assert r["mIoU"] == pytest.approx(100 / 3)
    assert r["F1"][:3] == pytest.approx([50.0, 80.0, 0.0])


def test_segmentation_metrics_stream_equals_one_shot() -> None:
    rng = np.random.default_rng(0)
    t = rng.integers(0, 6, (40, 40))
    t[rng.random((40, 40)) < 0.1] = 255
    p = rng.integers(0, 6, (40, 40))
    whole = SegmentationMetrics(6)
    whole.update(p, t)
    chunks = SegmentationMetrics(6)
    for i in range(0, 40, 7):
        chunks.update(torch.from_numpy(p[i : i + 7]), torch.from_numpy(t[i : i + 7]))
    assert np.array_equal(whole.confusion, chunks.confusion)


def test_segmentation_metrics_rejects_out_of_range_prediction() -> None:
    m = SegmentationMetrics(3)
    with pytest.raises(ValueError):
        m.update(np.array([5]), np.array([0]))


def test_height_metrics_hand_worked() -> None:
    y = np.array([2.0, 1.0, 0.0, -1.0, np.nan])
    p = np.array([1.5, 1.0, 0.5, 0.0, 5.0])
    m = HeightMetrics()
    m.update(p, y)
    r = m.compute()
    # RMSE over every finite reference (ground 0 and negative included): errors -.5, 0, .5, 1
    assert r["RMSE"] == pytest.approx(math.sqrt(1.5 / 4))
    assert r["pixels"] == 4 and r["pixels_positive"] == 2
    # AbsRel and delta only where y > 0: (0.25 + 0) / 2; ratios 1.333 and 1
    assert r["AbsRel"] == pytest.approx(0.125)
    assert r["delta1"] == pytest.approx(50.0)
    assert r["delta2"] == pytest.approx(100.0)
    assert r["delta3"] == pytest.approx(100.0)


def test_height_metrics_nonpositive_prediction_fails_delta_and_nodata() -> None:
    m = HeightMetrics(nodata=-9999.0)
    m.update(np.array([-1.0, 3.0, 1.0]), np.array([3.0, 3.0, -9999.0]))
    r = m.compute()
    assert r["pixels"] == 2
    assert r["delta1"] == pytest.approx(50.0)
    assert r["AbsRel"] == pytest.approx((4 / 3 + 0) / 2)


def test_height_metrics_empty_is_nan_and_merge() -> None:
    assert math.isnan(HeightMetrics().compute()["RMSE"])
    a, b, both = HeightMetrics(), HeightMetrics(), HeightMetrics()
    a.update(np.array([1.0]), np.array([2.0]))
    b.update(np.array([3.0]), np.array([2.0]))
    both.update(np.array([1.0, 3.0]), np.array([2.0, 2.0]))
    a.merge(b)
    assert a.compute() == both.compute()


def test_delta_m_matches_paper_sign_conventions() -> None:
    # Table 2, Potsdam: SemiMTL vs STL baselines (mIoU 79.7, RMSE 4.686) -> ΔM ≈ +6.1
    dm = delta_m({"mIoU": 81.4, "RMSE": 4.217}, {"mIoU": 79.7, "RMSE": 4.686})
    assert dm == pytest.approx(6.07, abs=0.01)
    # worse on both -> negative; lower RMSE is better, higher mIoU is better
    assert delta_m({"mIoU": 70.0}, {"mIoU": 80.0}) == pytest.approx(-12.5)
    assert delta_m({"RMSE": 5.0}, {"RMSE": 4.0}) == pytest.approx(-25.0)
    assert delta_m({"RMSE": 3.0}, {"RMSE": 4.0}) == pytest.approx(25.0)
    with pytest.raises(ValueError):
        delta_m({"foo": 1.0}, {"foo": 2.0})
