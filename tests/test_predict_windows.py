"""Window grids, Hann blending and in-memory sliding-window prediction."""

import re

import numpy as np
import pytest
import torch
from _predict_helpers import StubNet, stub_loaded, textured

from semimtl_geo.checkpoint import LoadedModel, ModelMeta
from semimtl_geo.errors import UserError
from semimtl_geo.inference import hann_2d, make_grid, predict_array
from semimtl_geo.inference.windows import window_starts
from semimtl_geo.models import MultiTaskNet


@pytest.fixture(scope="module")
def tiny() -> LoadedModel:
    torch.manual_seed(0)
    model = MultiTaskNet("resnet18", 3, 6, ("seg", "height"), None, 8).eval()
    return LoadedModel(model, ModelMeta(patch_size=64, overlap=0.5, height_scale=30.0), {})


@pytest.mark.parametrize("length,window,stride", [(200, 64, 32), (64, 64, 32), (65, 64, 48),
                                                  (1000, 512, 256), (10, 64, 32)])
def test_window_starts_cover_and_stay_inside(length, window, stride):
    win = min(window, length)
    starts = window_starts(length, win, stride)
    assert starts[0] == 0 and starts[-1] + win == length
    assert all(0 <= s <= length - win for s in starts)
    assert all(b - a <= stride for a, b in zip(starts, starts[1:]))
    covered = np.zeros(length, bool)
    for s in starts:
        covered[s:s + win] = True
    assert covered.all()


def test_grid_small_input_is_padded_to_multiple_of_8():
    grid = make_grid(20, 50, 64, 0.5)
    assert (grid.win_h, grid.win_w) == (20, 50)
    assert grid.mode == "pad" and grid.model_h % 8 == 0 and grid.model_w % 8 == 0
    assert grid.model_h >= 32 and grid.num_windows == 1


def test_grid_resampling_window_covers_patch_over_scale():
    grid = make_grid(300, 300, 64, 0.5, scale=2.0)
    assert grid.mode == "resize" and grid.win_h == 32 and grid.model_h == 64


@pytest.mark.parametrize("overlap", [-0.1, 1.0])
def test_grid_rejects_bad_overlap(overlap):
    with pytest.raises(UserError, match="Overlap"):
        make_grid(100, 100, 64, overlap)


def test_hann_is_positive_symmetric_and_peaks_in_centre():
    w = hann_2d(64, 48)
    assert w.shape == (64, 48) and (w > 0).all()
    np.testing.assert_allclose(w, w[::-1, ::-1], rtol=1e-6)
    assert w[32, 24] == w.max() and w[0, 0] < 0.01


def test_predict_array_outputs_metres_and_nodata(tiny):
    image = textured(150, 200)
    valid = np.ones((150, 200), bool)
    valid[:10] = False
    valid[50:60, 70:90] = False
    out = predict_array(tiny, image, valid, patch_size=64, overlap=0.5, return_probs=True)
    assert out["class"].dtype == np.uint8 and out["class"].shape == (150, 200)
    assert out["height"].dtype == np.float32
    assert (out["class"][~valid] == 255).all() and (out["class"][valid] < 6).all()
    assert np.isnan(out["height"][~valid]).all() and np.isfinite(out["height"][valid]).all()
    probs = out["probs"][:, valid]
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-4)
    np.testing.assert_array_equal(out["probs"].argmax(0)[valid], out["class"][valid])
    # metres = model output x height_scale: compare one window's raw output
    model_only = predict_array(tiny, image[:, :64, :64], patch_size=64, engine="eager")
    with torch.no_grad():
        x = (torch.from_numpy(image[:, :64, :64]).float()[None] / 255 - 0.5) / 0.25
        raw = tiny.model(x)["height"][0, 0].numpy()
    np.testing.assert_allclose(model_only["height"], raw * 30.0, rtol=1e-4, atol=1e-4)


def test_predict_array_small_input_and_task_subset(tiny):
    image = textured(5, 7)
    out = predict_array(tiny, image, patch_size=64, tasks=["height"])
    assert set(out) == {"height"} and out["height"].shape == (5, 7)
    assert np.isfinite(out["height"]).all()
    with pytest.raises(UserError, match="bands"):
        predict_array(tiny, image[:2])


@pytest.mark.parametrize("h,w", [(20, 50), (5, 7), (40, 61)])
def test_pad_mode_keeps_content_in_place(h, w):
    """Inputs smaller than the patch are edge-replicated at the bottom/right and cropped back.

    The stub is pixel-wise, so every output pixel must come from the same input pixel:
    cropping the model output from any other corner shifts the content.
    """
    loaded = stub_loaded()
    image = textured(h, w, seed=4)
    image[:, 0, 0] = 250  # a marker in the top-left corner
    out = predict_array(loaded, image, patch_size=64, overlap=0.5, return_probs=True)
    assert make_grid(h, w, 64, 0.5).mode == "pad"
    norm = (image.astype(np.float32) / 255 - 0.5) / 0.25
    np.testing.assert_allclose(out["height"], norm[0], atol=1e-6)
    with torch.no_grad():
        logits = StubNet()(torch.from_numpy(norm)[None])["seg"][0]
    np.testing.assert_array_equal(out["class"], logits.argmax(0).numpy())
    np.testing.assert_allclose(out["probs"], torch.softmax(logits, 0).numpy(), atol=1e-6)
    # what the model saw: the window at the top-left, its last row/column replicated
    (seen,) = loaded.model.seen
    assert seen.shape[-2] % 8 == 0 and seen.shape[-1] % 8 == 0 and min(seen.shape[-2:]) >= 32
    np.testing.assert_allclose(seen[0, :, :h, :w].numpy(), norm, atol=1e-6)
    np.testing.assert_array_equal(seen[0, :, h:, :w], seen[0, :, h - 1:h, :w].expand_as(
        seen[0, :, h:, :w]))
    np.testing.assert_array_equal(seen[0, :, :, w:], seen[0, :, :, w - 1:w].expand_as(
        seen[0, :, :, w:]))


def test_invalid_pixels_never_reach_model_as_zeros():
    loaded = stub_loaded()
    image = textured(100, 130)
    image[:, 30:60, 40:90] = 0  # nodata zeros
    valid = image.any(axis=0)
    out = predict_array(loaded, image, valid, patch_size=64)
    seen = torch.cat([s.flatten() for s in loaded.model.seen])
    raw_zero = (0 / 255 - 0.5) / 0.25
    assert seen.min() > raw_zero + 0.5  # zeros were replaced by the band means
    assert (out["class"][~valid] == 255).all()


def test_stub_identity_is_reproduced_exactly_through_blending():
    loaded = stub_loaded()
    image = textured(97, 131)
    out = predict_array(loaded, image, patch_size=64, overlap=0.5)
    expected = (image[0].astype(np.float32) / 255 - 0.5) / 0.25
    np.testing.assert_allclose(out["height"], expected, atol=1e-5)


def test_resampled_windows_keep_alignment():
    """A 2x coarser input runs at 2x size in the model and comes back on its own grid."""
    loaded = stub_loaded()
    image = np.full((3, 120, 150), 60, np.uint8)
    image[:, 40:80, 50:110] = 200
    out = predict_array(loaded, image, patch_size=64, overlap=0.5, scale=2.0)
    assert loaded.model.seen[0].shape[-1] == 64  # 32 input px -> 64 model px
    bright = out["height"] > 0.5 * (out["height"].max() + out["height"].min())
    ys, xs = np.nonzero(bright)
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (40, 79, 50, 109)


def _border_jump(height: np.ndarray, borders: list[int]) -> float:
    """Largest column-to-column jump at window borders relative to the typical jump."""
    diffs = np.abs(np.diff(height, axis=1)).mean(axis=0)  # diffs[i] = |col i+1 - col i|
    at = diffs[[b - 1 for b in borders]]
    typical = np.median(np.delete(diffs, [b - 1 for b in borders]))
    return float(at.max() / typical)


def test_overlap_blending_leaves_no_seam(tiny):
    """A constant input gives a translation-invariant scene; blended windows show no seam."""
    image = np.full((3, 64, 320), 128, np.uint8)
    hard = predict_array(tiny, image, patch_size=64, overlap=0.0)["height"]
    blended = predict_array(tiny, image, patch_size=64, overlap=0.5)["height"]
    borders_hard = [64, 128, 192, 256]
    # control: hard tiling shows a seam at every window border
    assert _border_jump(hard, borders_hard) > 5.0
    borders_blend = list(range(32, 320, 32))
    assert _border_jump(blended, borders_blend) < 2.0


def test_stub_model_shapes_are_honoured():
    # the stub is a valid stand-in: windows reach it as B x C x 64 x 64 normalised
    net = StubNet()
    out = net(torch.zeros(2, 3, 64, 64))
    assert out["seg"].shape == (2, 6, 64, 64) and out["height"].shape == (2, 1, 64, 64)


def test_engine_streams_strips_and_emits_each_row_once():
    """Memory stays O(patch x width); every input row is read once; rows leave in order."""
    from semimtl_geo.inference.engine import run_sliding_windows
    from semimtl_geo.inference.predictor import WindowPredictor

    loaded = stub_loaded()
    predictor = WindowPredictor(loaded)
    image = textured(300, 90)
    grid = make_grid(300, 90, 64, 0.5)
    reads, emitted = [], []

    def read_strip(y0, y1):
        reads.append((y0, y1))
        return image[:, y0:y1], np.ones((y1 - y0, 90), bool)

    def sink(rows):
        emitted.append((rows.row_start, rows.valid.shape[0]))

    run_sliding_windows(grid, read_strip, predictor, sink, batch_size=3)
    assert len(reads) == len(grid.row_starts)  # one read per window row
    assert all(0 < y1 - y0 <= 64 for y0, y1 in reads)
    assert reads[0] == (0, 64)
    assert all(a1 == b0 for (_, a1), (b0, _) in zip(reads, reads[1:]))  # no row twice
    assert reads[-1][1] == 300
    starts = [r for r, _ in emitted]
    assert starts == sorted(starts) and starts[0] == 0
    assert sum(n for _, n in emitted) == 300
    assert all(a + n == b for (a, n), (b, _) in zip(emitted, emitted[1:]))


def test_height_range_keeps_small_copies_not_views_of_rows():
    """Regression: samples that are views keep every finished row alive (memory grew)."""
    from semimtl_geo.inference.raster import _HeightRange

    hr = _HeightRange()
    for k in range(5):
        rows = np.random.default_rng(k).normal(10, 2, (256, 4000)).astype(np.float32)
        hr.add(rows)
    assert all(s.base is None and s.size <= 2100 for s in hr.samples)
    lo, hi = hr.range()
    assert 4 < lo < 10 < hi < 16


# ------------------------------------------------------------------ unit checks of the parts


def test_resolve_tasks_and_device():
    from semimtl_geo.inference.predictor import resolve_device, resolve_tasks

    loaded = stub_loaded()
    assert resolve_tasks(loaded, None) == ("seg", "height")
    assert resolve_tasks(loaded, "both") == ("seg", "height")
    assert resolve_tasks(loaded, "height") == ("height",)
    assert resolve_tasks(loaded, " height , seg") == ("seg", "height")  # model order
    assert resolve_tasks(loaded, ["height", ""]) == ("height",)
    with pytest.raises(UserError, match=re.escape(
            "The checkpoint predicts seg, height but depth was requested; pass --tasks with a "
            "subset of seg,height.")):
        resolve_tasks(loaded, "depth")
    with pytest.raises(UserError, match=re.escape(
            "The checkpoint predicts seg, height but depth, rgb was requested; pass --tasks "
            "with a subset of seg,height.")):
        resolve_tasks(loaded, "depth,rgb,seg")
    with pytest.raises(UserError, match=re.escape(
            "The checkpoint predicts seg, height but no task was requested; pass --tasks with "
            "a subset of seg,height.")):
        resolve_tasks(loaded, ",")
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match=re.escape(
                "Device 'cuda:0' was requested but CUDA is not available; use --device cpu.")):
            resolve_device("cuda:0")


def test_window_predictor_normalises_scales_and_checks_meta():
    from semimtl_geo.inference.predictor import WindowPredictor

    loaded = stub_loaded()
    loaded.meta.height_scale = 2.5
    runner = WindowPredictor(loaded, tasks="height")
    assert runner.device.type == "cpu" and runner.cuda is False
    np.testing.assert_allclose(runner.fill_values, [127.5] * 3)
    assert runner.fill_values.dtype == np.float32
    assert (runner.in_channels, runner.num_classes) == (3, 6)
    # p * scale + shift is (p / 255 - mean) / std; float32 like every batch (a float64
    # constant would make each batch's normalisation a slow mixed-dtype operation)
    assert runner._scale.dtype == runner._shift.dtype == torch.float32
    assert runner._scale.flatten().tolist() == pytest.approx([1 / (255 * 0.25)] * 3, rel=1e-7)
    assert runner._shift.flatten().tolist() == [-0.5 / 0.25] * 3
    windows = textured(32, 40)[None]
    out = runner(windows, make_grid(32, 40, 64, 0.5))
    assert set(out) == {"height"} and out["height"].shape == (1, 32, 40)
    expected = (windows[0, 0].astype(np.float32) / 255 - 0.5) / 0.25 * 2.5
    np.testing.assert_allclose(out["height"][0], expected, atol=1e-5)
    bad = stub_loaded()
    bad.meta.mean = [0.5, 0.5]
    with pytest.raises(UserError, match=re.escape(
            "Checkpoint meta has 2 mean / 3 std values for a 3-band model; re-save the "
            "checkpoint with one value per band.")):
        WindowPredictor(bad)


def test_grid_checks_and_axis_sizes():
    for args, message in [
        ((0, 10, 64, 0.5), "The raster is 10x0 pixels; it needs at least one pixel."),
        ((10, 0, 64, 0.5), "The raster is 0x10 pixels; it needs at least one pixel."),
        ((10, 10, 7, 0.5), "Patch size 7 is too small; use at least 8 px."),
        ((10, 10, 64, 1.5), "Overlap 1.5 is outside [0, 1); use e.g. 0.5 for half-window "
                            "overlap."),
        ((10, 10, 64, 0.5, 0.0), "Resampling scale 0.0 must be positive."),
    ]:
        with pytest.raises(UserError, match="^" + re.escape(message) + "$"):
            make_grid(*args)
    g = make_grid(64, 200, 64, 0.0)  # exact fit: identity, no overlap
    assert g.mode == "identity" and (g.model_h, g.model_w) == (64, 64)
    assert g.row_starts == (0,) and g.col_starts == (0, 64, 128, 136)
    g = make_grid(100, 100, 64, 0.25)
    assert g.col_starts == (0, 36) and g.win_w == 64  # stride floor(64 * 0.75) = 48
    g = make_grid(8, 24, 64, 0.5)  # 8 and 24 are multiples of 8 but below 32 -> pad
    assert g.mode == "pad" and (g.model_h, g.model_w) == (32, 32)
    g = make_grid(100, 40, 64, 0.5, scale=0.5)  # finer input: 128 px windows shrink to 64
    assert g.mode == "resize" and (g.win_h, g.model_h) == (100, 56) and g.win_w == 40
    assert g.model_w == 32  # 40 * 0.5 = 20 px -> at least 32
    g = make_grid(300, 300, 64, 0.5, scale=2.0)
    assert (g.win_h, g.model_h, g.row_starts[:3]) == (32, 64, (0, 16, 32))
    assert window_starts(10, 3, 0) == list(range(8))  # stride < 1 still advances


def test_hann_weights_hand_computed():
    from semimtl_geo.inference.blending import WEIGHT_FLOOR, hann_1d

    w = hann_1d(4)
    assert w.dtype == np.float32
    s1, s3 = np.sin(np.pi / 8) ** 2, np.sin(3 * np.pi / 8) ** 2
    np.testing.assert_allclose(w, [s1, s3, s3, s1], rtol=1e-6)
    assert hann_1d(1).tolist() == [1.0]
    long = hann_1d(200)  # sin^2(pi / 400) = 6e-5 at the ends: floored
    assert long[0] == long[-1] == np.float32(WEIGHT_FLOOR) and WEIGHT_FLOOR == 1e-3
    assert long[1] == np.float32(WEIGHT_FLOOR) and long[10] > WEIGHT_FLOOR
    w2 = hann_2d(4, 3)
    assert w2.dtype == np.float32 and w2.shape == (4, 3)
    np.testing.assert_allclose(w2, np.outer(w, hann_1d(3)), rtol=1e-6)


def test_fill_values_are_band_means_rounded_and_clipped():
    from semimtl_geo.inference.engine import _fill_tensor, run_sliding_windows
    from semimtl_geo.inference.predictor import WindowPredictor

    fill = _fill_tensor(np.array([127.6, -4.0, 300.0], np.float32), np.dtype(np.uint8),
                        torch.device("cpu"))
    assert fill.dtype == torch.uint8 and fill.flatten().tolist() == [128, 0, 255]
    flt = _fill_tensor(np.array([0.25, 1.5, 2.0], np.float32), np.dtype(np.float32),
                       torch.device("cpu"))
    assert flt.flatten().tolist() == [0.25, 1.5, 2.0]
    # through the engine: invalid pixels reach the model as the fill, valid ones as they
    # are, and the caller's array is not modified
    loaded = stub_loaded()
    strip = np.full((3, 40, 40), 9, np.uint8)
    valid = np.ones((40, 40), bool)
    valid[0, 1] = False
    run_sliding_windows(make_grid(40, 40, 64, 0.5), lambda a, b: (strip[:, a:b], valid[a:b]),
                        WindowPredictor(loaded, engine="eager"), lambda rows: None)
    seen = loaded.model.seen[0][0]  # normalised: (p / 255 - 0.5) / 0.25
    raw = ((seen * 0.25 + 0.5) * 255).round()
    assert raw[:, 0, 1].tolist() == [128.0] * 3 and (raw[:, 1:, :] == 9).all()
    assert (strip == 9).all()


def test_engine_skips_empty_windows_and_blends_probabilities():
    from semimtl_geo.inference.engine import run_sliding_windows
    from semimtl_geo.inference.predictor import WindowPredictor

    loaded = stub_loaded()
    image = textured(64, 200)
    valid = np.ones((64, 200), bool)
    valid[:, :100] = False  # windows starting at 0 and 32 see no data at all
    grid = make_grid(64, 200, 64, 0.5)
    counts, rows = [], []
    run_sliding_windows(grid, lambda a, b: (image[:, a:b], valid[a:b]), WindowPredictor(loaded),
                        rows.append, batch_size=2, keep_probs=True, on_windows=counts.append)
    assert sum(counts) == grid.num_windows and counts[0] == 2  # two skipped, reported first
    assert len(loaded.model.seen) == 2 and [len(b) for b in loaded.model.seen] == [2, 2]
    (out,) = rows
    assert out.row_start == 0 and out.valid.shape == (64, 200)
    np.testing.assert_array_equal(out.valid, valid)
    assert (out.classes[~valid] == 255).all() and np.isnan(out.height[~valid]).all()
    assert np.isnan(out.probs[:, ~valid]).all()
    np.testing.assert_allclose(out.probs[:, valid].sum(0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(out.probs[:, valid].argmax(0), out.classes[valid])
    norm = (image[0].astype(np.float32) / 255 - 0.5) / 0.25
    np.testing.assert_allclose(out.height[valid], norm[valid], atol=1e-5)


def test_engine_defaults_and_output_dtypes():
    """Defaults: 4 windows per model call, no probabilities; outputs uint8 / float32."""
    from semimtl_geo.inference.engine import run_sliding_windows
    from semimtl_geo.inference.predictor import WindowPredictor

    loaded = stub_loaded()
    image = textured(64, 300)
    grid = make_grid(64, 300, 64, 0.5)
    rows = []
    run_sliding_windows(grid, lambda a, b: (image[:, a:b], np.ones((b - a, 300), bool)),
                        WindowPredictor(loaded), rows.append)
    assert grid.num_windows == 9 and [len(b) for b in loaded.model.seen] == [4, 4, 1]
    (out,) = rows
    assert out.probs is None
    assert out.classes.dtype == np.uint8 and out.height.dtype == np.float32
    rows.clear()
    run_sliding_windows(grid, lambda a, b: (image[:, a:b], np.ones((b - a, 300), bool)),
                        WindowPredictor(loaded), rows.append, keep_probs=True)
    assert rows[0].probs.dtype == np.float32 and rows[0].probs.shape == (6, 64, 300)


def test_engine_skips_empty_windows_without_a_progress_callback():
    from semimtl_geo.inference.engine import run_sliding_windows
    from semimtl_geo.inference.predictor import WindowPredictor

    loaded = stub_loaded()
    image = textured(64, 200)
    valid = np.zeros((64, 200), bool)
    valid[:, 150:] = True
    rows = []
    run_sliding_windows(make_grid(64, 200, 64, 0.5), lambda a, b: (image[:, a:b], valid[a:b]),
                        WindowPredictor(loaded), rows.append)
    assert (rows[0].classes[:, :100] == 255).all() and (rows[0].classes[:, 150:] < 6).all()


@pytest.mark.parametrize(("height", "overlap"), [(127, 0.0), (128, 0.0), (100, 0.5)])
def test_stub_identity_survives_every_band_shift(height, overlap):
    """The blending band moves up by a whole window (no row kept) or all but one row.

    127 rows at 64 px and no overlap: window rows start at 0 and 63, so one row is kept
    when the band shifts; 128 rows: starts 0 and 64, nothing is kept and every row of the
    band must be zeroed. A stale or lost row shows up as a wrong value in that row.
    """
    loaded = stub_loaded()
    image = textured(height, 70, seed=2)
    grid = make_grid(height, 70, 64, overlap)
    assert grid.row_starts == {127: (0, 63), 128: (0, 64), 100: (0, 32, 36)}[height]
    out = predict_array(loaded, image, patch_size=64, overlap=overlap)
    expected = (image[0].astype(np.float32) / 255 - 0.5) / 0.25
    np.testing.assert_allclose(out["height"], expected, atol=1e-5)


def test_window_predictor_keeps_the_engine_it_resolved():
    from semimtl_geo.inference.predictor import WindowPredictor

    for name in ("eager", "channels-last"):
        runner = WindowPredictor(stub_loaded(), engine=name)
        assert runner.engine_name == name and runner.engine.name == name


def test_resolve_device_names_and_gpu_counts(monkeypatch):
    """Device strings, checked against a pretended machine (no GPU needed)."""
    from semimtl_geo.inference.predictor import resolve_device

    for bad in ("tpu", "foo:bar", "cuda:x"):
        with pytest.raises(UserError, match="^" + re.escape(
                f"Device '{bad}' is not one semimtl-geo runs on; use auto, cpu, cuda, cuda:N "
                "or mps.") + "$"):
            resolve_device(bad)
    assert resolve_device(" CPU ") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda") == torch.device("cuda")
    assert resolve_device("CUDA:1") == torch.device("cuda", 1)
    with pytest.raises(UserError, match="^" + re.escape(
            "Device 'cuda:2' does not exist: this machine has 2 CUDA device(s), cuda:0 to "
            "cuda:1.") + "$"):
        resolve_device("cuda:2")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(UserError, match="^" + re.escape(
            "Device 'mps' was requested but Apple's MPS is not available; use --device cpu.")
            + "$"):
        resolve_device("mps")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("mps") == torch.device("mps")


class _ConvNet(torch.nn.Module):
    """Random 3x3 convolutions: zero padding makes each window's output depend on where
    the window is, so a window blended into the wrong rows or columns changes the result."""

    tasks = ("seg", "height")
    in_channels = 3
    num_classes = 6

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(5)
        self.conv = torch.nn.Conv2d(3, 7, 3, padding=1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        y = self.conv(x)
        return {"seg": y[:, :6], "height": y[:, 6:]}


@pytest.mark.parametrize("height, patch, overlap", [(150, 64, 0.3), (211, 48, 0.5),
                                                    (97, 64, 0.0)])
def test_engine_ring_band_matches_whole_image_blending(height, patch, overlap):
    """Uneven row steps wrap the ring accumulators at every offset; the streamed result
    equals blending every window into whole-image float64 sums."""
    from semimtl_geo.inference.blending import hann_2d
    from semimtl_geo.inference.engine import run_sliding_windows
    from semimtl_geo.inference.predictor import WindowPredictor

    meta = stub_loaded(patch_size=patch, overlap=overlap).meta
    predictor = WindowPredictor(LoadedModel(_ConvNet().eval(), meta, {}), engine="eager")
    width = 173
    image = textured(height, width, seed=4)
    valid = np.ones((height, width), bool)
    valid[:, :40] = False  # the first windows of each row see no data and are skipped
    grid = make_grid(height, width, patch, overlap)
    assert len(set(np.diff(grid.row_starts))) > 1 or overlap == 0.0
    rows = []
    run_sliding_windows(grid, lambda a, b: (image[:, a:b], valid[a:b]), predictor,
                        rows.append, batch_size=3, keep_probs=True)
    classes = np.concatenate([r.classes for r in rows])
    heights = np.concatenate([r.height for r in rows])
    probs = np.concatenate([r.probs for r in rows], axis=1)
    # the whole-image reference, window by window
    fill = np.round(predictor.fill_values).astype(np.uint8)[:, None, None]
    filled = np.where(valid[None], image, fill)
    weight = hann_2d(grid.win_h, grid.win_w).astype(np.float64)
    sums = np.zeros((6, height, width))
    hsum = np.zeros((height, width))
    wsum = np.zeros((height, width))
    for r in grid.row_starts:
        for c in grid.col_starts:
            if not valid[r:r + grid.win_h, c:c + grid.win_w].any():
                continue
            window = torch.from_numpy(filled[None, :, r:r + grid.win_h, c:c + grid.win_w])
            out = predictor(window.numpy(), grid)
            sums[:, r:r + grid.win_h, c:c + grid.win_w] += out["probs"][0] * weight
            hsum[r:r + grid.win_h, c:c + grid.win_w] += out["height"][0] * weight
            wsum[r:r + grid.win_h, c:c + grid.win_w] += weight
    ref_probs = sums / np.where(wsum > 0, wsum, 1)
    np.testing.assert_allclose(probs[:, valid], ref_probs[:, valid], atol=1e-5)
    np.testing.assert_allclose(heights[valid], (hsum / wsum)[valid], rtol=1e-5, atol=1e-5)
    top2 = np.sort(ref_probs, axis=0)[-2:]
    clear = valid & (top2[1] - top2[0] > 1e-4)
    np.testing.assert_array_equal(classes[clear], ref_probs.argmax(0)[clear])
    assert (classes[~valid] == 255).all() and np.isnan(heights[~valid]).all()


@pytest.mark.parametrize("name, inside", [
    ("one_thread", {4: 1, 2: 1, 1: 1}),  # the blending thread
    ("model_threads", {4: 3, 2: 1, 1: 1}),  # a light network leaves one to the blending
])
def test_thread_counts_inside_and_restored_after(name, inside):
    from semimtl_geo.inference import predictor

    threads_for = getattr(predictor, name)
    before = torch.get_num_threads()
    try:
        for threads, expected in inside.items():
            torch.set_num_threads(threads)
            with threads_for(torch.device("cpu")):
                assert torch.get_num_threads() == expected
            assert torch.get_num_threads() == threads
        torch.set_num_threads(2)
        with pytest.raises(RuntimeError), threads_for(torch.device("cpu")):
            raise RuntimeError
        assert torch.get_num_threads() == 2
        with threads_for(torch.device("meta")):  # only the CPU is affected
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_macs_per_pixel_hand_computed_and_heavy_networks_keep_every_thread():
    from torch import nn

    from semimtl_geo.inference.predictor import (
        LIGHT_MACS_PER_PIXEL,
        macs_per_pixel,
        model_threads,
    )

    cpu = torch.device("cpu")
    # 3 -> 8 channels, 3 x 3, stride 2: 8 outputs per 4 pixels, 27 MACs each = 54 per pixel;
    # 8 -> 5, 1 x 1 at the same resolution: 5 x 8 / 4 = 10; a linear 5 -> 2 per vector: 0
    net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.Conv2d(8, 5, 1),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 2))
    assert macs_per_pixel(net, 3, cpu, size=32) == pytest.approx(54 + 10 + 10 / 1024)
    grouped = nn.Conv2d(4, 4, 3, padding=1, groups=4)  # depthwise: 9 MACs per output
    assert macs_per_pixel(grouped, 4, cpu, size=16) == 4 * 9
    up = nn.ConvTranspose2d(2, 3, 2, stride=2)  # each input pixel feeds 3 x 4 outputs
    assert macs_per_pixel(up, 2, cpu, size=16) == 2 * 3 * 4
    # a 1 x 1 convolution 2 -> 2 (4 MACs per pixel) then the same transposed one: summed
    assert macs_per_pixel(nn.Sequential(nn.Conv2d(2, 2, 1), up), 2, cpu, size=16) == 4 + 24
    strided = nn.Conv2d(3, 8, 3, stride=2, padding=1)  # counted on a 64 x 64 probe by default:
    assert macs_per_pixel(strided, 3, cpu) == 54  # 32 x 32 outputs (an odd size rounds up)
    assert macs_per_pixel(StubNet(), 3, cpu) == 0.0 and not StubNet().seen  # not called
    tiny = MultiTaskNet("resnet18", 3, 6, ("seg", "height"), None, 16).eval()
    assert macs_per_pixel(tiny, 3, cpu) > 50 * LIGHT_MACS_PER_PIXEL
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with model_threads(cpu, light=False):
            assert torch.get_num_threads() == 2
        with model_threads(cpu, light=True):
            assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


class _WideNet(_ConvNet):
    """_ConvNet through 64 channels first: 3 x 9 x 64 + 64 x 9 x 7 = 5760 MACs per pixel,
    a heavy network (LIGHT_MACS_PER_PIXEL is 1000)."""

    def __init__(self) -> None:
        super().__init__()
        self.wide = torch.nn.Conv2d(3, 64, 3, padding=1)
        self.conv = torch.nn.Conv2d(64, 7, 3, padding=1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return super().forward(self.wide(x))


@pytest.mark.parametrize("light", [True, False])
def test_engine_runs_the_network_on_one_thread_fewer_and_softmax_in_the_blending_thread(
        monkeypatch, light):
    """On the CPU a light network's model call gets threads - 1, a heavy one's every
    thread; softmax and scaling run in the thread that blends (one torch thread)."""
    import threading

    from semimtl_geo.inference.engine import run_sliding_windows
    from semimtl_geo.inference.predictor import WindowPredictor

    loaded = stub_loaded()
    if not light:
        loaded = LoadedModel(_WideNet().eval(), loaded.meta, {})
    predictor = WindowPredictor(loaded)
    assert predictor.light is light
    image = textured(150, 150)
    grid = make_grid(150, 150, 64, 0.5)
    seen = {"model": set(), "finish": set()}
    run_model, finish = predictor.run_model, predictor.finish_outputs

    def spy_model(*args, **kwargs):
        seen["model"].add((threading.current_thread().name, torch.get_num_threads()))
        return run_model(*args, **kwargs)

    def spy_finish(*args, **kwargs):
        seen["finish"].add((threading.current_thread().name[:13], torch.get_num_threads()))
        return finish(*args, **kwargs)

    monkeypatch.setattr(predictor, "run_model", spy_model)
    monkeypatch.setattr(predictor, "finish_outputs", spy_finish)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        rows = []
        run_sliding_windows(grid, lambda a, b: (image[:, a:b], np.ones((b - a, 150), bool)),
                            predictor, rows.append, batch_size=2)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert seen["model"] == {(threading.main_thread().name, 1 if light else 2)}
    assert seen["finish"] == {("semimtl-blend", 1)}
    assert sum(len(r.valid) for r in rows) == 150


def test_softmax_window_by_window_equals_the_batched_softmax():
    from semimtl_geo.inference.predictor import _softmax_windows

    torch.manual_seed(0)
    head = torch.randn(3, 7, 33, 40) * 5  # a 7-channel head; seg is its first 6 channels
    logits = head[:, :6]  # not contiguous as a batch, each window is
    assert not logits.is_contiguous() and logits[0].is_contiguous()
    out = _softmax_windows(logits, torch.empty(3, 6, 33, 40))
    # odd window sizes: the vectorised kernel's chunks fall elsewhere, last-bit differences
    torch.testing.assert_close(out, torch.softmax(logits, dim=1), rtol=0, atol=1e-7)
    head = torch.randn(2, 7, 64, 64) * 5  # the model sizes the pipeline uses: identical
    out = _softmax_windows(head[:, :6], torch.empty(2, 6, 64, 64))
    assert torch.equal(out, torch.softmax(head[:, :6], dim=1))


def test_grid_edges_one_pixel_smallest_patch_and_odd_resampling():
    g = make_grid(1, 1, 64, 0.5)  # a 1-pixel raster is valid
    assert (g.win_h, g.win_w, g.model_h, g.mode) == (1, 1, 32, "pad")
    g = make_grid(10, 10, 8, 0.5)  # the smallest patch, 8 px
    assert (g.win_h, g.model_h, g.mode) == (8, 32, "pad")  # encoder inputs >= 32 px
    g = make_grid(300, 300, 100, 0.5, scale=3.0)  # full windows: the model gets the patch
    assert (g.win_h, g.model_h) == (33, 100)  # round(100 / 3) = 33 px, not 33 * 3 -> 104
    g = make_grid(10, 10, 8, 0.0, scale=10.0)  # patch / scale = 0.8 px: one input pixel
    assert (g.win_h, g.model_h, g.mode) == (1, 8, "resize")


def _blend_threads() -> list:
    import threading

    return [t for t in threading.enumerate() if t.name.startswith("semimtl-blend")]


def test_a_sink_error_in_the_blending_thread_stops_the_run_and_reaches_the_caller():
    from semimtl_geo.inference.engine import run_sliding_windows
    from semimtl_geo.inference.predictor import WindowPredictor

    predictor = WindowPredictor(stub_loaded())
    image = textured(400, 90)
    grid = make_grid(400, 90, 64, 0.5)
    emitted = []

    def sink(rows):
        emitted.append(rows.row_start)
        if len(emitted) == 2:
            raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        run_sliding_windows(grid, lambda a, b: (image[:, a:b], np.ones((b - a, 90), bool)),
                            predictor, sink, batch_size=1)
    assert len(emitted) == 2  # nothing reached the sink after the error
    assert not _blend_threads()


def test_an_error_in_the_model_call_cancels_the_queued_blending(monkeypatch):
    from semimtl_geo.inference.engine import run_sliding_windows
    from semimtl_geo.inference.predictor import WindowPredictor

    predictor = WindowPredictor(stub_loaded())
    image = textured(400, 90)
    grid = make_grid(400, 90, 64, 0.5)
    calls, emitted = {"n": 0}, []
    original = predictor.run_model  # the engine's model call

    def flaky(windows, grid, **kwargs):
        calls["n"] += 1
        if calls["n"] == 7:
            raise KeyboardInterrupt
        return original(windows, grid, **kwargs)

    monkeypatch.setattr(predictor, "run_model", flaky)
    with pytest.raises(KeyboardInterrupt):
        run_sliding_windows(grid, lambda a, b: (image[:, a:b], np.ones((b - a, 90), bool)),
                            predictor, lambda rows: emitted.append(rows.row_start),
                            batch_size=1)
    done = list(emitted)
    assert not _blend_threads()  # the thread has ended: nothing can reach the sink later
    assert emitted == done and len(done) < len(grid.row_starts)
    assert done == sorted(done)


@pytest.mark.parametrize("origin, start, stop, size, expected", [
    (0, 0, 5, 8, [([0, 1, 2, 3, 4], [0, 1, 2, 3, 4])]),
    (3, 2, 5, 8, [([5, 6, 7], [2, 3, 4])]),  # band rows 2..4 sit at 3 + 2 = 5..7: no wrap
    (5, 0, 3, 8, [([5, 6, 7], [0, 1, 2])]),  # ends exactly at the ring's end: one piece
    (6, 1, 6, 8, [([7], [1]), ([0, 1, 2, 3], [2, 3, 4, 5])]),  # wraps after one row
    (4, 0, 8, 8, [([4, 5, 6, 7], [0, 1, 2, 3]), ([0, 1, 2, 3], [4, 5, 6, 7])]),
])
def test_ring_pieces_hand_computed(origin, start, stop, size, expected):
    """Band row i lives in accumulator row (origin + i) % size; wrapping splits in two."""
    from semimtl_geo.inference.engine import _ring_pieces

    pieces = _ring_pieces(origin, start, stop, size)
    acc, band = np.arange(size), np.arange(stop + size)
    assert [(acc[a].tolist(), band[b].tolist()) for a, b in pieces] == expected


def test_resize_mode_maps_outputs_back_with_half_pixel_centres():
    """A 4 px window goes to the model at 8 px and back (bilinear, align_corners=False):
    the identity stub's height along a 0, 1, 2, 3 ramp comes back as the hand-computed
    0.125, 1, 2, 2.875 (up: 0, .25, .75, ..., 2.75, 3; down: means of pixel pairs)."""
    import warnings

    from semimtl_geo.inference.predictor import WindowPredictor

    grid = make_grid(4, 4, 8, 0.0, scale=2.0)
    assert (grid.win_w, grid.model_w, grid.mode) == (4, 8, "resize")
    predictor = WindowPredictor(stub_loaded(patch_size=8), engine="eager")
    windows = np.broadcast_to(np.arange(4, dtype=np.float32), (1, 3, 4, 4)).copy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no output buffer of the wrong shape is resized
        out = predictor(windows, grid)
    raw = np.array([0.125, 1.0, 2.0, 2.875])
    expected = (raw / 255 - 0.5) / 0.25  # the stub's height: normalised band 0, metres x 1
    np.testing.assert_allclose(out["height"][0], np.broadcast_to(expected, (4, 4)), atol=1e-6)


# ------------------------------------------------------------------ devices and buffers
# PyTorch's "meta" device holds shapes but no data, and refuses to mix with CPU tensors:
# it stands in for a GPU or MPS device here, where a tensor left on the CPU is an error.


def test_engine_parts_put_their_tensors_on_the_device_they_are_given():
    """Regression: ``_upload`` handed back a CPU tensor for every device but CUDA, so on
    MPS the strip, its valid mask and the fill met accumulators on the MPS device
    (``--device mps`` failed with a device mismatch)."""
    from semimtl_geo.inference.engine import _argmax_classes, _fill_tensor, _upload

    meta = torch.device("meta")
    up = _upload(np.arange(60, dtype=np.uint8).reshape(3, 4, 5), meta)
    assert (up.device, up.dtype, tuple(up.shape)) == (meta, torch.uint8, (3, 4, 5))
    on_cpu = _upload(np.arange(6, dtype=np.uint8).reshape(2, 3)[:, ::2], torch.device("cpu"))
    assert on_cpu.device.type == "cpu" and on_cpu.tolist() == [[0, 2], [3, 5]]
    fill = _fill_tensor(np.array([1.0, 2.0], np.float32), np.dtype(np.uint8), meta)
    assert (fill.device, fill.dtype, tuple(fill.shape)) == (meta, torch.uint8, (2, 1, 1))
    # off the CPU the class argmax runs in torch, on the sums' device
    classes = _argmax_classes(torch.empty((6, 4, 5), device=meta))
    assert (classes.device, classes.dtype, tuple(classes.shape)) == (meta, torch.uint8, (4, 5))


def test_prediction_keeps_its_buffers_on_the_predictor_device_whatever_torch_defaults_to():
    """``torch.set_default_device("cuda")`` (a notebook habit) must not move the batch,
    normalisation or blending buffers of a CPU prediction: each is made on the
    predictor's device. The default is set to "meta" here; the outputs must not change."""
    loaded = stub_loaded()
    image = textured(100, 70, seed=2)
    valid = np.ones((100, 70), bool)
    valid[:, 60:] = False  # the fill and the skipped-window weights too
    ref = predict_array(loaded, image, valid, patch_size=64, overlap=0.5, return_probs=True)
    torch.set_default_device("meta")
    try:
        out = predict_array(loaded, image, valid, patch_size=64, overlap=0.5,
                            return_probs=True)
    finally:
        torch.set_default_device(None)
    assert set(out) == set(ref) == {"class", "probs", "height"}
    for key in ref:
        np.testing.assert_array_equal(out[key], ref[key])


def test_forward_windows_reuses_the_workspace_buffers():
    """The workspace dict keeps one buffer per output (allocated once per shape): a
    second call with the same dict writes into the same tensors, with no resize warning
    (a buffer of the wrong shape would be resized by torch, with a warning, every call)."""
    import warnings

    from semimtl_geo.inference.predictor import WindowPredictor

    predictor = WindowPredictor(stub_loaded(), engine="eager")
    grid = make_grid(40, 50, 64, 0.5)  # pad mode: 40 x 50 windows run at 40 x 56
    windows = torch.from_numpy(textured(40, 50, seed=3)).expand(3, -1, -1, -1)
    space: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        first = predictor.forward_windows(windows, grid, workspace=space)
        ptrs = {k: v.data_ptr() for k, v in first.items()}
        buffers = {k: v.data_ptr() for k, v in space.items()}
        second = predictor.forward_windows(list(windows), grid, workspace=space)
    assert {k: v.data_ptr() for k, v in second.items()} == ptrs
    assert {k: v.data_ptr() for k, v in space.items()} == buffers
    assert second["probs"].shape == (3, 6, 40, 50) and second["height"].shape == (3, 40, 50)
    expected = (windows[:, 0].numpy().astype(np.float32) / 255 - 0.5) / 0.25
    np.testing.assert_allclose(second["height"].numpy(), expected, atol=1e-6)
    # the normalised batch is kept there too (the model's input, before padding)
    normalised = (windows.float() / 255 - 0.5) / 0.25
    assert [k for k, v in space.items() if v.shape == normalised.shape
            and torch.allclose(v, normalised, atol=1e-6)]


def test_prediction_ignores_torch_default_dtype():
    """Blending accumulates in float32 whatever ``torch.set_default_dtype`` says: with a
    float64 default the outputs are bit-identical (a buffer made without an explicit
    dtype would accumulate in float64 and move the last bits, or hand back float64)."""
    meta = stub_loaded().meta
    loaded = LoadedModel(_ConvNet().eval(), meta, {})  # weights made under float32
    image = textured(100, 70, seed=2)
    valid = np.ones((100, 70), bool)
    valid[:, 60:] = False
    kwargs = {"patch_size": 64, "overlap": 0.5, "return_probs": True, "engine": "eager"}
    ref = predict_array(loaded, image, valid, **kwargs)
    torch.set_default_dtype(torch.float64)
    try:
        out = predict_array(loaded, image, valid, **kwargs)
    finally:
        torch.set_default_dtype(torch.float32)
    for key in ("class", "probs", "height"):
        assert out[key].dtype == ref[key].dtype
        np.testing.assert_array_equal(out[key], ref[key])


def test_an_error_cancels_the_rows_queued_behind_a_slow_sink(monkeypatch):
    """Rows queued for the blending thread when the caller fails are dropped, not written:
    the sink holds the first rows until the model call has failed; the second window
    row's blend and rows, queued by then, never reach it."""
    import threading
    import time

    from semimtl_geo.inference import engine
    from semimtl_geo.inference.engine import run_sliding_windows
    from semimtl_geo.inference.predictor import WindowPredictor

    predictor = WindowPredictor(stub_loaded())
    image = textured(300, 60)
    grid = make_grid(300, 60, 64, 0.5)  # one window per row: one batch per window row
    failed, calls, emitted, seen_failed = threading.Event(), {"n": 0}, [], []
    original = predictor.run_model  # the engine's model call

    def flaky(windows, grid, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # batch 2 reuses batch 0's buffers, whose blend is done
            failed.set()
            raise KeyboardInterrupt
        return original(windows, grid, **kwargs)

    workers = []
    enter = engine._Worker.__enter__

    def sink(rows):
        emitted.append(rows.row_start)
        if len(emitted) == 1:  # hold the worker until the caller has failed and left it
            assert failed.wait(60)
            deadline = time.monotonic() + 60
            while not workers[0].failed and time.monotonic() < deadline:
                time.sleep(0.01)
            seen_failed.append(workers[0].failed)  # set by the caller's exit, not a task

    monkeypatch.setattr(engine._Worker, "__enter__",
                        lambda self: (workers.append(self), enter(self))[1])
    monkeypatch.setattr(predictor, "run_model", flaky)
    with pytest.raises(KeyboardInterrupt):
        run_sliding_windows(grid, lambda a, b: (image[:, a:b], np.ones((b - a, 60), bool)),
                            predictor, sink, batch_size=1)
    assert calls["n"] == 3 and emitted == [0] and seen_failed == [True]
    assert not _blend_threads()


def test_segmentation_only_prediction_matches_the_two_task_classes():
    """``tasks=["seg"]``: no height buffer is made or blended (the model's height output is
    not asked for) and the classes equal those of the two-task run."""
    loaded = stub_loaded()
    image = textured(90, 100, seed=6)
    both = predict_array(loaded, image, patch_size=64, overlap=0.5)
    seg = predict_array(loaded, image, patch_size=64, overlap=0.5, tasks=["seg"],
                        return_probs=True)
    assert set(seg) == {"class", "probs"}
    np.testing.assert_array_equal(seg["class"], both["class"])


def test_tasks_queued_behind_a_failed_blending_task_do_nothing():
    """The first failing task (say, the sink: disk full) stops the worker: the flushes
    already queued behind it must not call the sink again before the caller notices
    (this raced before: a third row could reach the sink after the error)."""
    import threading

    from semimtl_geo.inference.engine import _Worker

    gate, ran = threading.Event(), []

    def fail_when_released():
        gate.wait(5)
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"), _Worker(torch.device("cpu")) as worker:
        first = worker.submit(fail_when_released)
        later = [worker.submit(ran.append, k) for k in range(3)]  # queued behind it
        gate.set()
        for future in later:
            future.result(timeout=5)
        assert first.exception(timeout=5) is not None
        assert ran == []
        worker.submit(ran.append, 99)  # the caller's next submit raises the first error
    assert ran == []


# ------------------------------------------- engine parts on a device, threads and overlap


def test_accumulators_are_made_on_the_predictor_device():
    """The ring accumulators, the Hann weights and the full-row weight sums live on the
    predictor's device (on CUDA the accumulators never leave the GPU); "meta" stands in
    for a GPU: a tensor left on the CPU shows up as a CPU device here."""
    from types import SimpleNamespace

    from semimtl_geo.inference.engine import _Accumulators

    meta = torch.device("meta")
    predictor = SimpleNamespace(device=meta, tasks=("seg", "height"), num_classes=6)
    acc = _Accumulators(make_grid(64, 100, 64, 0.5), predictor, lambda rows: None, False)
    assert acc.device == meta
    for name, shape in [("weight", (64, 64)), ("acc_w", (64, 100)), ("sums", (6, 64, 100)),
                        ("acc_h", (64, 100)), ("full_wsum", (64, 100))]:
        tensor = getattr(acc, name)
        assert (tensor.device, tensor.dtype, tuple(tensor.shape)) == (
            meta, torch.float32, shape), name


@pytest.mark.parametrize("default", ["device", "dtype"])
def test_finished_rows_are_float32_on_the_accumulators_device_whatever_torch_defaults(default):
    """Finishing rows makes its buffers (validity, classes, probabilities, heights) on the
    accumulators' device, in float32 / uint8: neither a default device ("meta" here; on a
    GPU, buffers on the wrong device) nor a float64 default dtype changes the rows the
    sink gets. One 64 x 64 window of hand-made probabilities and heights, blended alone:
    the finished rows are those values, class 255 and NaN where not valid."""
    from semimtl_geo.classes import IGNORE_INDEX
    from semimtl_geo.inference.engine import _Accumulators, _ring_pieces
    from semimtl_geo.inference.predictor import WindowPredictor

    grid = make_grid(64, 64, 64, 0.5)  # one window
    rows = []
    acc = _Accumulators(grid, WindowPredictor(stub_loaded()), rows.append, True)
    gen = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(1, 6, 64, 64, generator=gen) * 3, dim=1)
    height = torch.randn(1, 64, 64, generator=gen) * 10
    pieces = _ring_pieces(0, 0, 64, 64)
    acc.add_full_weights(pieces)
    acc.blend({"probs": probs, "height": height}, [0], pieces, False)
    valid = np.ones((64, 64), bool)
    valid[5:9, 20:40] = False
    if default == "device":
        torch.set_default_device("meta")
    else:
        torch.set_default_dtype(torch.float64)
    try:
        acc.flush(0, 64, 0, torch.from_numpy(valid))
    finally:
        torch.set_default_device(None)
        torch.set_default_dtype(torch.float32)
    (out,) = rows
    assert (out.valid.dtype, out.classes.dtype) == (np.bool_, np.uint8)
    assert out.probs.dtype == out.height.dtype == np.float32
    np.testing.assert_array_equal(out.valid, valid)
    expected = probs[0].argmax(0).numpy()
    np.testing.assert_array_equal(out.classes[valid], expected[valid])
    assert (out.classes[~valid] == IGNORE_INDEX).all()
    np.testing.assert_allclose(out.probs[:, valid], probs[0].numpy()[:, valid], rtol=1e-6)
    np.testing.assert_allclose(out.height[valid], height[0].numpy()[valid], rtol=1e-5,
                               atol=1e-5)
    assert np.isnan(out.probs[:, ~valid]).all() and np.isnan(out.height[~valid]).all()
    assert not acc.acc_w.any() and not acc.sums.any() and not acc.acc_h.any()  # zeroed


def test_nodata_is_filled_on_the_predictor_device():
    """A strip with nodata is filled on the predictor's device: the windows the model gets
    are there ("meta" stands in for a GPU; a fill value left on the CPU cannot be mixed
    with the uploaded strip). The stub model stops the run at its first call."""
    from types import SimpleNamespace

    from semimtl_geo.inference.engine import run_sliding_windows

    class Stop(Exception):
        pass

    seen = []

    def run_model(windows, grid, workspace=None):
        seen.extend((w.device.type, w.dtype, tuple(w.shape)) for w in windows)
        raise Stop

    predictor = SimpleNamespace(device=torch.device("meta"), tasks=("seg", "height"),
                                num_classes=6, light=False, run_model=run_model,
                                fill_values=np.array([120.0, 130.0, 140.0], np.float32))
    image = textured(64, 64)
    valid = np.ones((64, 64), bool)
    valid[:10] = False
    with pytest.raises(Stop):
        run_sliding_windows(make_grid(64, 64, 64, 0.5),
                            lambda a, b: (image[:, a:b], valid[a:b]), predictor,
                            lambda rows: None)
    assert seen == [("meta", torch.uint8, (3, 64, 64))]


def test_the_model_runs_the_next_batch_while_the_previous_one_is_blended(monkeypatch):
    """Two sets of batch buffers alternate, so batch n + 1 goes through the model while
    the blending thread still works on batch n (the overlap the blending thread is for).
    Each blend here waits until the model call of the next batch has started; with one
    set of buffers that call would wait for the blend, and the run would stall."""
    import threading

    from semimtl_geo.inference.engine import run_sliding_windows
    from semimtl_geo.inference.predictor import WindowPredictor

    loaded = stub_loaded()
    predictor = WindowPredictor(loaded)
    image = textured(64, 200)
    grid = make_grid(64, 200, 64, 0.5)  # one row of 6 windows: 6 batches of one
    assert len(grid.row_starts) == 1 and len(grid.col_starts) == 6
    started = [threading.Event() for _ in grid.col_starts]
    calls, stalled = {"model": 0, "finish": 0}, []
    run_model, finish = predictor.run_model, predictor.finish_outputs

    def spy_model(*args, **kwargs):
        started[calls["model"]].set()
        calls["model"] += 1
        return run_model(*args, **kwargs)

    def spy_finish(*args, **kwargs):
        n = calls["finish"]
        calls["finish"] += 1
        if n + 1 < len(started) and not stalled and not started[n + 1].wait(30):
            stalled.append(n)  # the model did not start batch n + 1 while n was blended
        return finish(*args, **kwargs)

    monkeypatch.setattr(predictor, "run_model", spy_model)
    monkeypatch.setattr(predictor, "finish_outputs", spy_finish)
    rows = []
    run_sliding_windows(grid, lambda a, b: (image[:, a:b], np.ones((b - a, 200), bool)),
                        predictor, rows.append, batch_size=1)
    assert stalled == [] and calls == {"model": 6, "finish": 6}
    ref = predict_array(loaded, image, patch_size=64, overlap=0.5)
    np.testing.assert_array_equal(rows[0].classes, ref["class"])
    np.testing.assert_array_equal(rows[0].height, ref["height"])


def test_strips_are_read_in_a_background_thread_that_ends_with_the_run():
    """``read_strip`` runs in the reader thread (reads overlap the model call), never in the
    caller's thread, and that thread is gone after the run, after an error too. The
    thread is found by its name, "semimtl-read" (what a debugger or py-spy shows)."""
    import threading

    from semimtl_geo.inference.engine import run_sliding_windows
    from semimtl_geo.inference.predictor import WindowPredictor

    predictor = WindowPredictor(stub_loaded())
    image = textured(200, 70)
    grid = make_grid(200, 70, 64, 0.5)
    names = []

    def read_strip(a, b):
        names.append(threading.current_thread().name)
        return image[:, a:b], np.ones((b - a, 70), bool)

    def readers():
        return [t for t in threading.enumerate() if t.name.startswith("semimtl-read")]

    rows = []
    run_sliding_windows(grid, read_strip, predictor, rows.append)
    assert len(names) == len(grid.row_starts) and all(
        n.startswith("semimtl-read") for n in names)
    assert not readers() and sum(len(r.valid) for r in rows) == 200

    def failing_sink(rows):
        assert readers()  # the reader is still there while the run goes on
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        run_sliding_windows(grid, read_strip, predictor, failing_sink)
    assert not readers()


def test_cuda_uploads_go_through_pinned_memory_without_blocking(monkeypatch):
    """A spy (there is no CUDA here): on CUDA a strip is copied into page-locked memory and
    uploaded with ``non_blocking=True``, so the host goes on cutting windows while the
    copy runs (a pageable or blocking copy gives the same values, slower)."""
    from semimtl_geo.inference.engine import _upload

    calls = []

    def pin_memory(self):
        calls.append("pin")
        return self

    def to(self, *args, **kwargs):
        device = kwargs.pop("device", args[0] if args else None)
        calls.append(("to", torch.device(device), kwargs))
        return self

    monkeypatch.setattr(torch.Tensor, "pin_memory", pin_memory)
    monkeypatch.setattr(torch.Tensor, "to", to)
    cuda = torch.device("cuda")
    out = _upload(np.arange(6, dtype=np.uint8).reshape(2, 3)[:, ::2], cuda)
    assert calls == ["pin", ("to", cuda, {"non_blocking": True})]
    assert out.tolist() == [[0, 2], [3, 5]]


def test_class_argmax_on_the_cpu_takes_the_numpy_steps(monkeypatch):
    """A spy: on the CPU the class arg-max runs its steps in NumPy (``np.equal`` into a bool
    buffer is 4x faster than torch's, the reason the CPU path exists); the torch steps
    are for other devices. Both give torch.argmax's classes (test_predict_engines)."""
    from semimtl_geo.inference import engine

    def torch_steps(sums):
        raise AssertionError("the torch steps ran on the CPU")

    monkeypatch.setattr(engine, "_argmax_classes_torch", torch_steps)
    sums = torch.randn(6, 20, 30, generator=torch.Generator().manual_seed(1))
    classes = engine._argmax_classes(sums)
    assert classes.dtype == torch.uint8 and torch.equal(classes, sums.argmax(0).to(torch.uint8))


@pytest.mark.parametrize("patch, scale, mode", [(64, 1.0, "pad"), (8, 2.0, "resize")])
def test_forward_windows_returns_outputs_at_the_windows_own_size(patch, scale, mode):
    """Outputs come back at the size of the windows given (``N x K x h x w`` of the windows),
    also for windows smaller than the grid's: padded to the model size and cropped back,
    or resized to it and back. The identity stub's height of a flat window stays flat."""
    from semimtl_geo.inference.predictor import WindowPredictor

    grid = make_grid(30, 30, patch, 0.0, scale=scale)
    assert grid.mode == mode and grid.win_h > 3
    predictor = WindowPredictor(stub_loaded(patch_size=patch), engine="eager")
    windows = torch.full((2, 3, grid.win_h - 1, grid.win_w - 3), 150, dtype=torch.uint8)
    out = predictor.forward_windows(windows, grid)
    assert out["probs"].shape == (2, 6, grid.win_h - 1, grid.win_w - 3)
    assert out["height"].shape == (2, grid.win_h - 1, grid.win_w - 3)
    np.testing.assert_allclose(out["height"].numpy(), (150 / 255 - 0.5) / 0.25, atol=1e-5)


def test_a_numpy_batch_is_moved_to_the_predictor_device(monkeypatch):
    """A spy on the forward pass: ``predictor(windows, grid)`` hands it the NumPy batch as a
    tensor on the predictor's device ("meta" stands in for a GPU)."""
    from semimtl_geo.inference.predictor import WindowPredictor

    predictor = WindowPredictor(stub_loaded())
    predictor.device = torch.device("meta")
    seen = []

    def forward(x, grid):
        seen.append((x.device.type, x.dtype, tuple(x.shape)))
        return {"height": torch.zeros(2, 4, 5)}

    monkeypatch.setattr(predictor, "forward_windows", forward)
    out = predictor(np.zeros((2, 3, 4, 5), np.uint8), make_grid(4, 5, 64, 0.5))
    assert seen == [("meta", torch.uint8, (2, 3, 4, 5))] and out["height"].shape == (2, 4, 5)


def test_the_predictor_puts_the_network_and_its_constants_on_its_device(monkeypatch):
    """The network, its parameters and the normalisation constants go to the predictor's
    device ("meta" stands in for a GPU: resolve_device accepts no such device, so it is
    bypassed here); off the CPU no MAC probe runs and the network counts as not light."""
    from semimtl_geo.inference import predictor as predictor_module

    meta = torch.device("meta")
    monkeypatch.setattr(predictor_module, "resolve_device", lambda device: meta)
    loaded = LoadedModel(_ConvNet().eval(), stub_loaded().meta, {})
    runner = predictor_module.WindowPredictor(loaded, device="meta", engine="eager")
    assert runner.device == meta and runner.cuda is False and runner.light is False
    assert {p.device for p in runner.model.parameters()} == {meta}
    assert runner._scale.device == runner._shift.device == meta
