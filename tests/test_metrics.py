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


def test_height_metrics_count_near_ground_references_as_the_paper_does() -> None:
    """The paper's AbR counts every reference > 0; the robust variant drops y <= min_height."""
    y = np.array([0.02, 0.1, 4.0, 0.0])
    p = np.array([0.5, 0.1, 5.0, 0.3])
    m = HeightMetrics(min_height=0.5)
    m.update(p, y)
    r = m.compute()
    # paper: y > 0 -> |0.48|/0.02 = 24, 0, 1/4 -> mean 8.0833; ratios 25, 1, 1.25
    assert r["pixels_positive"] == 3
    assert r["AbsRel"] == pytest.approx((24 + 0 + 0.25) / 3)
    assert r["delta1"] == pytest.approx(100 / 3)  # 1.25 is not < 1.25
    assert r["delta2"] == pytest.approx(200 / 3)
    # robust: only 4.0 m
    assert r["pixels_positive_robust"] == 1
    assert r["AbsRel_robust"] == pytest.approx(0.25)
    assert r["delta1_robust"] == pytest.approx(0.0)
    assert r["delta2_robust"] == pytest.approx(100.0)
    assert r["RMSE"] == pytest.approx(math.sqrt((0.48**2 + 0 + 1 + 0.09) / 4))


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
    merged, whole = a.compute(), both.compute()
    assert math.isnan(merged.pop("r")) and math.isnan(whole.pop("r"))  # constant reference
    assert merged == whole


def test_height_metrics_pearson_r() -> None:
    """r = 1 for any increasing linear map, -1 for a decreasing one, NaN for a constant."""
    y = np.array([0.0, 1.0, 4.0, 9.0, np.nan])
    for p, expected in ((2 * y + 1, 1.0), (5 - 0.5 * y, -1.0)):
        m = HeightMetrics()
        m.update(p, y)
        assert m.compute()["r"] == pytest.approx(expected)
    m = HeightMetrics()
    m.update(np.full(5, 3.0), y)
    assert math.isnan(m.compute()["r"])
    m = HeightMetrics()
    m.update(np.array([1.0, 2.0, 2.0]), np.array([1.0, 2.0, 3.0]))
    assert m.compute()["r"] == pytest.approx(np.corrcoef([1, 2, 2], [1, 2, 3])[0, 1])
    # two distinct points lie on a line: r = +-1; one point has no correlation
    m = HeightMetrics()
    m.update(np.array([1.0, 3.0]), np.array([5.0, 2.0]))
    assert m.compute()["r"] == pytest.approx(-1.0)
    m = HeightMetrics()
    m.update(np.array([1.0]), np.array([5.0]))
    assert math.isnan(m.compute()["r"])


def test_height_metrics_pearson_r_streams_and_merges_like_numpy() -> None:
    """Chunked updates and merged accumulators give numpy's r, even far from zero."""
    rng = np.random.default_rng(0)
    y = 1000.0 + rng.gamma(2.0, 3.0, 10_000)
    p = 0.7 * y + rng.normal(0.0, 4.0, y.size) + 50.0
    expected = np.corrcoef(p, y)[0, 1]
    chunked = HeightMetrics()
    for part in np.array_split(np.arange(y.size), 7):
        chunked.update(p[part], y[part])
    assert chunked.compute()["r"] == pytest.approx(expected, abs=1e-9)
    a, b, empty = HeightMetrics(), HeightMetrics(), HeightMetrics()
    a.update(p[:3000], y[:3000])
    b.update(p[3000:] - 0.0, y[3000:])
    empty.merge(a)  # an empty accumulator takes the other's shift
    empty.merge(b)
    assert empty.compute()["r"] == pytest.approx(expected, abs=1e-9)
    assert empty.compute()["RMSE"] == pytest.approx(chunked.compute()["RMSE"])


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


def test_segmentation_metrics_f1_reset_merge_and_errors() -> None:
    target = np.array([0, 0, 1, 1, 2, 7, 9])  # 7 (outside 0..3) and 9 (ignore) are skipped
    pred = np.array([0, 1, 1, 1, 3, 0, 0])
    m = SegmentationMetrics(num_classes=4, ignore_index=9)
    m.update(pred, target)
    r = m.compute()
    # TP = [1, 2, 0, 0]; FP = [0, 1, 0, 1]; FN = [1, 0, 1, 0]
    assert r["pixels"] == 5 and r["pAcc"] == pytest.approx(60.0)
    assert r["IoU"] == pytest.approx([50.0, 200 / 3, 0.0, 0.0])
    assert r["F1"] == pytest.approx([200 / 3, 80.0, 0.0, 0.0])
    assert r["mIoU"] == pytest.approx((50 + 200 / 3) / 4)
    assert r["mF1"] == pytest.approx((200 / 3 + 80) / 4)
    other = SegmentationMetrics(num_classes=4, ignore_index=9)
    other.update(np.array([2]), np.array([2]))
    m.merge(other)
    assert m.compute()["pixels"] == 6 and m.compute()["IoU"][2] == pytest.approx(50.0)
    m.reset()
    empty = m.compute()
    assert empty["pixels"] == 0 and math.isnan(empty["pAcc"]) and math.isnan(empty["mIoU"])
    assert math.isnan(empty["mF1"]) and empty["IoU"] == [None] * 4
    with pytest.raises(ValueError, match=r"^prediction and target sizes differ: \(3,\) vs \(4,\)$"):
        m.update(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match=r"^predicted class ids must lie in 0\.\.3$"):
        m.update(np.array([-1]), np.array([0]))
    m.update(np.array([5]), np.array([9]))  # an ignored pixel may carry any prediction
    assert m.compute()["pixels"] == 0


def test_height_metrics_valid_mask_min_height_reset_and_tensor_input() -> None:
    y = torch.tensor([2.0, 1.0, 0.4, 4.0], dtype=torch.bfloat16)
    p = torch.tensor([2.0, 2.0, 0.4, 4.0])
    m = HeightMetrics(min_height=0.5)
    m.update(p, y, valid=np.array([True, True, True, False]))
    r = m.compute()
    # the paper's AbsRel/δ count every reference > 0 (0.4 included; 4.0 is masked)
    assert r["pixels"] == 3 and r["pixels_positive"] == 3
    assert r["RMSE"] == pytest.approx(math.sqrt(1 / 3))
    assert r["AbsRel"] == pytest.approx(1 / 3, abs=1e-3)  # (0 + 1 + ~0) / 3; 0.4 in bf16
    assert (r["delta1"], r["delta2"], r["delta3"]) == pytest.approx((200 / 3,) * 3)
    # the robust variant leaves out 0.4 <= min_height
    assert r["pixels_positive_robust"] == 2
    assert r["AbsRel_robust"] == pytest.approx(0.5)  # (0 + 1) / 2
    assert (r["delta1_robust"], r["delta2_robust"], r["delta3_robust"]) == pytest.approx(
        (50.0, 50.0, 50.0))
    m.reset()
    r = m.compute()
    assert r["pixels"] == 0 and math.isnan(r["AbsRel"]) and math.isnan(r["delta1"])
    assert math.isnan(r["AbsRel_robust"]) and r["pixels_positive_robust"] == 0
    assert math.isnan(r["r"])
    # after a reset the accumulator is as good as new (r included)
    fresh = HeightMetrics(min_height=0.5)
    for acc in (m, fresh):
        acc.update(np.array([1.0, 3.0, 2.0]), np.array([2.0, 2.0, 2.5]))
    assert m.compute() == fresh.compute()
    with pytest.raises(ValueError, match=r"^prediction and target sizes differ: \(2,\) vs \(3,\)$"):
        m.update(np.zeros(2), np.zeros(3))


def test_height_delta_thresholds_are_strict_powers_of_1_25() -> None:
    y = np.ones(4)
    p = np.array([1.2, 1.25 ** 1.5, 1.25 ** 2.5, 1.25 ** 3.5])  # one ratio per band
    m = HeightMetrics()
    m.update(p, y)
    r = m.compute()
    assert (r["delta1"], r["delta2"], r["delta3"]) == pytest.approx((25.0, 50.0, 75.0))
    # the ratio is symmetric: under-prediction by the same factor counts the same
    m2 = HeightMetrics()
    m2.update(1 / p, y)
    assert m2.compute()["delta2"] == pytest.approx(50.0)
    # infinite predictions are left out like missing references
    m3 = HeightMetrics()
    m3.update(np.array([np.inf, 1.0]), np.array([1.0, 1.0]))
    assert m3.compute()["pixels"] == 1


def test_delta_m_averages_tasks_and_rejects_undefined_inputs() -> None:
    dm = delta_m({"mIoU": 88.0, "RMSE": 5.0, "extra": 1.0}, {"mIoU": 80.0, "RMSE": 4.0})
    assert dm == pytest.approx((10.0 - 25.0) / 2)  # only measures in both count
    assert delta_m({"pAcc": 90.0}, {"pAcc": 80.0}) == pytest.approx(12.5)
    assert delta_m({"AbsRel": 0.2}, {"AbsRel": 0.25}) == pytest.approx(20.0)
    assert delta_m({"score": 2.0}, {"score": 1.0}, {"score": True}) == pytest.approx(-100.0)
    with pytest.raises(ValueError, match="^delta_m needs at least one measure present in "
                                         "both model and baseline$"):
        delta_m({"mIoU": 1.0}, {"RMSE": 1.0})
    with pytest.raises(ValueError, match="^baseline RMSE is 0; ΔM is undefined$"):
        delta_m({"RMSE": 1.0}, {"RMSE": 0.0})
    with pytest.raises(ValueError, match="^delta_m does not know whether lower 'foo' is "
                                         "better$"):
        delta_m({"foo": 1.0}, {"foo": 2.0})


def test_segmentation_metrics_edges_of_the_class_range() -> None:
    m = SegmentationMetrics(num_classes=4)
    assert m.confusion.dtype == np.int64  # exact counts, however many pixels
    m.update(np.array([0, 3, 1]), np.array([4, 3, 0]))  # reference 4 = num_classes: skipped
    r = m.compute()
    assert r["pixels"] == 2
    assert r["IoU"][3] == pytest.approx(100.0)  # one pixel, right: union 1
    assert r["IoU"][0] == 0.0 and r["IoU"][2] is None and r["F1"][2] is None
    assert r["F1"][3] == pytest.approx(100.0) and r["F1"][1] == 0.0
    with pytest.raises(ValueError, match=r"^predicted class ids must lie in 0\.\.3$"):
        m.update(np.array([4]), np.array([0]))


def test_height_metrics_accumulate_over_updates_and_combine_masks() -> None:
    one, two = HeightMetrics(nodata=-1.0), HeightMetrics(nodata=-1.0)
    p = np.array([1.0, 2.0, 1.25, 0.0, 3.0, 5.0, 7.0])
    y = np.array([1.0, 1.0, 1.0, 1.0, 2.0, -1.0, np.nan])
    valid = np.array([True, True, True, True, True, True, True])
    one.update(p, y, valid)
    two.update(p[:3], y[:3], valid[:3])
    two.update(p[3:], y[3:], valid[3:])
    r = one.compute()
    assert two.compute() == r
    # nodata (-1) and NaN references are left out even with an all-True valid mask
    assert r["pixels"] == 5 and r["pixels_positive"] == 5
    assert r["RMSE"] == pytest.approx(math.sqrt((0 + 1 + 0.0625 + 1 + 1) / 5))
    assert r["AbsRel"] == pytest.approx((0 + 1 + 0.25 + 1 + 0.5) / 5)
    # ratios 1, 2, 1.25 (not < 1.25), inf (prediction 0 fails), 1.5
    assert (r["delta1"], r["delta2"], r["delta3"]) == pytest.approx((20.0, 60.0, 60.0))
    masked = HeightMetrics()
    masked.update(np.array([1.0, 9.0]), np.array([np.nan, 3.0]), np.array([True, False]))
    assert masked.compute()["pixels"] == 0


def test_height_metrics_merge_recentres_accumulators_with_their_own_history() -> None:
    """Merging two accumulators that each saw several chunks with different means.

    Each accumulator sums about the mean of its *first* chunk, so its later chunks leave
    non-zero first moments; merging must move the other's sums onto our centre exactly
    (merging into an empty accumulator only shifts every value alike, which r ignores).
    """
    rng = np.random.default_rng(4)
    n = 4000
    y = 20.0 + np.linspace(0.0, 60.0, n) + rng.gamma(2.0, 2.0, n)  # a trend: chunk means differ
    p = 0.8 * y + rng.normal(0.0, 5.0, n) - 7.0
    parts = np.array_split(np.arange(n), 4)
    a, b = HeightMetrics(), HeightMetrics()
    for acc, chunks in ((a, parts[:2]), (b, parts[2:])):
        for idx in chunks:
            acc.update(p[idx], y[idx])
    a.merge(b)
    assert a.compute()["r"] == pytest.approx(np.corrcoef(p, y)[0, 1], abs=1e-9)
    assert a.compute()["RMSE"] == pytest.approx(float(np.sqrt(np.mean((p - y) ** 2))))
    b2 = HeightMetrics()  # the other way round: the later data first
    for idx in parts[2:] + parts[:2]:
        b2.update(p[idx], y[idx])
    assert b2.compute()["r"] == pytest.approx(np.corrcoef(p, y)[0, 1], abs=1e-9)


def test_height_metrics_pearson_r_is_clipped_and_quiet() -> None:
    """Rounding can put |r| a hair above 1 (here 1 + 2e-16): r is clipped to [-1, 1]."""
    y = np.array([8.216181435011583, 3.304370761833871, -13.03157231604361,
                  9.053558666731178, 4.463745723640113])
    for sign in (1.0, -1.0):
        m = HeightMetrics()
        m.update(sign * 0.7 * y + 3.1, y)
        assert m.compute()["r"] == sign  # exactly +-1, not +-1.0000000000000002
    # a constant prediction or reference has no r, and says so without a 0/0 warning
    import warnings

    for pred, ref in ((np.full(4, 2.5), y[:4]), (y[:4], np.full(4, 2.5))):
        m = HeightMetrics(min_height=0.25)
        m.update(pred, ref)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            r = m.compute()
        assert math.isnan(r["r"]) and r["min_height"] == 0.25
