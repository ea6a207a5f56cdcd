"""ONNX export for QGIS Deepness: parity with PyTorch and the metadata the plugin reads."""

import json
from pathlib import Path

import numpy as np

# onnx and onnxruntime are declared test dependencies (pyproject [test]): a missing one
# fails the run instead of silently skipping the export tests.
import onnx
import onnxruntime as ort
import pytest
import torch

from semimtl_geo.checkpoint import ModelMeta, save_model_checkpoint
from semimtl_geo.classes import ClassTable
from semimtl_geo.cli.main import main
from semimtl_geo.export.graph import FixedAdaptiveAvgPool2d
from semimtl_geo.export.onnx_export import output_paths
from semimtl_geo.models import MultiTaskNet

TILE = 64
CLASSES = ClassTable(
    ("ground", "roof", "grass", "water"), ((1, 2, 3), (4, 5, 6), (7, 8, 9), (9, 9, 9))
)
META = ModelMeta(
    classes=CLASSES, bands=["R", "G", "B"], mean=[0.3, 0.4, 0.5], std=[0.2, 0.1, 0.25],
    gsd=0.05, height_scale=25.0, patch_size=TILE, overlap=0.25,
)

# Keys the Deepness documentation (creators_add_metadata_to_model.rst) lists for our types.
DOC_KEYS = {"model_type", "class_names", "resolution", "tiles_size", "tiles_overlap"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("onnx")
    torch.manual_seed(1)
    model = MultiTaskNet("resnet18", 3, len(CLASSES), ("seg", "height"), None, 8).eval()
    # Random BN statistics so the exported graph is not near-identity.
    for mod in model.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.2, 0.2)
            mod.running_var.uniform_(0.5, 2.0)
    ckpt = save_model_checkpoint(tmp / "tiny.ckpt", model, META)
    assert main(["export-onnx", "--checkpoint", str(ckpt), "-o", str(tmp / "model.onnx")]) == 0
    return model, tmp


def deepness_preprocess(tile_hwc: np.ndarray, channels: int) -> np.ndarray:
    """Deepness's ModelBase.preprocessing for a model without standardization metadata."""
    batch = tile_hwc[None, :, :, :channels]
    batch = np.float32(batch * 1.0 / 255.0)
    return np.transpose(batch, (0, 3, 1, 2))


def session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_one_file_per_task(exported):
    _, tmp = exported
    assert sorted(p.name for p in tmp.glob("*.onnx")) == ["model_height.onnx", "model_seg.onnx"]
    assert not list(tmp.glob("*.tmp"))


def test_onnxruntime_matches_torch_on_deepness_input(exported):
    model, tmp = exported
    assert_onnx_matches_torch(model, tmp)


@pytest.mark.parametrize(("norm", "seg_skip"),
                         [("group", False), ("domain", False), ("domain", True)])
def test_other_norms_export_and_match_torch(tmp_path, norm, seg_skip):
    """model.norm=group/domain, model.seg_skip: the graphs compute the same; --domain picks
    the statistics."""
    torch.manual_seed(2)
    domains = ["potsdam", "vaihingen"] if norm == "domain" else None
    model = MultiTaskNet("resnet18", 3, len(CLASSES), ("seg", "height"), None, 8, norm=norm,
                         domains=domains, seg_skip=seg_skip)
    for name, param in model.named_parameters():  # random norm terms: not near-identity
        if param.ndim == 1 and not name.endswith(("classifier.bias", "regressor.bias")):
            param.data.uniform_(0.5, 1.5)
    for name, buf in model.named_buffers():
        if name.endswith("running_mean"):
            buf.uniform_(-0.2, 0.2)
        elif name.endswith("running_var"):
            buf.uniform_(0.5, 2.0)
    model.eval()
    ckpt = save_model_checkpoint(tmp_path / "tiny.ckpt", model, META)
    argv = ["export-onnx", "--checkpoint", str(ckpt), "-o", str(tmp_path / "model.onnx")]
    if domains:
        argv += ["--domain", "vaihingen"]
        model.select_domain("vaihingen")
    assert main(argv) == 0
    assert_onnx_matches_torch(model, tmp_path)


def assert_onnx_matches_torch(model: MultiTaskNet, tmp: Path) -> None:
    """onnxruntime on Deepness-preprocessed input vs the PyTorch model."""
    rng = np.random.default_rng(7)
    tile = rng.integers(0, 256, size=(TILE, TILE, 4), dtype=np.uint8)  # 4-band layer, 3 used
    x = deepness_preprocess(tile, 3)
    with torch.no_grad():
        norm = (torch.from_numpy(x) - torch.tensor(META.mean).view(1, 3, 1, 1)) / torch.tensor(
            META.std
        ).view(1, 3, 1, 1)
        out = model(norm)
    probs = session(tmp / "model_seg.onnx").run(None, {"input": x})[0]
    height = session(tmp / "model_height.onnx").run(None, {"input": x})[0]
    assert probs.shape == (1, len(CLASSES), TILE, TILE)
    assert height.shape == (1, 1, TILE, TILE)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    seg_diff = np.abs(probs - out["seg"].softmax(1).numpy()).max()
    raw_height = out["height"].numpy()
    height_diff = np.abs(height - np.maximum(raw_height, 0.0)).max()
    print(f"max abs diff: seg {seg_diff:.2e}, height {height_diff:.2e}")
    assert seg_diff < 1e-4
    assert height_diff < 1e-3 * max(1.0, float(np.abs(height).max()))
    # The probabilities are not trivially uniform: the check above has teeth.
    assert probs.max() - probs.min() > 1e-3


def test_regressor_never_emits_negative_heights(exported):
    """Deepness <= 0.6.5 stores heights as uint8: a negative one would wrap to 250-255 m."""
    model, tmp = exported
    x = np.random.default_rng(3).random((1, 3, TILE, TILE), dtype=np.float32)
    with torch.no_grad():
        norm = (torch.from_numpy(x) - torch.tensor(META.mean).view(1, 3, 1, 1)) / torch.tensor(
            META.std
        ).view(1, 3, 1, 1)
        raw = model(norm)["height"].numpy()
    assert (raw < 0).mean() > 0.05, "the fixture must predict negative heights for this check"
    assert (raw > 0).mean() > 0.05
    height = session(tmp / "model_height.onnx").run(None, {"input": x})[0]
    assert height.min() == 0.0
    np.testing.assert_allclose(height, np.maximum(raw, 0.0), atol=1e-3 * np.abs(raw).max())


def test_metadata_has_the_keys_deepness_reads(exported):
    _, tmp = exported
    for name, model_type in (("model_seg.onnx", "Segmentor"), ("model_height.onnx", "Regressor")):
        proto = onnx.load(str(tmp / name))
        props = {p.key: json.loads(p.value) for p in proto.metadata_props}  # all JSON strings
        assert DOC_KEYS <= props.keys()
        assert props["model_type"] == model_type
        assert props["resolution"] == pytest.approx(5.0)  # cm per pixel
        assert props["tiles_size"] == props["tile_size"] == TILE
        assert props["tiles_overlap"] == 25
        assert "standardization_mean" not in props and "standardization_std" not in props
        names = props["class_names"]
        assert [int(k) for k in names] == list(range(len(names)))
        sess = session(tmp / name)
        assert len(sess.get_inputs()) == 1 and len(sess.get_outputs()) == 1
        assert sess.get_inputs()[0].shape == [1, 3, TILE, TILE]
        out_shape = sess.get_outputs()[0].shape
        assert out_shape[2] == out_shape[3] == TILE
        meta_map = sess.get_modelmeta().custom_metadata_map
        assert json.loads(meta_map["model_type"]) == model_type
    seg_proto = onnx.load(str(tmp / "model_seg.onnx"))
    seg = {p.key: json.loads(p.value) for p in seg_proto.metadata_props}
    assert seg["class_names"] == {str(i): n for i, n in enumerate(CLASSES.names)}
    # Without the key, Deepness's dialog turns on a 9 px small-segment (median) filter.
    assert seg["seg_small_segment"] == 0 and seg["seg_thresh"] == 0.0
    height = {
        p.key: json.loads(p.value) for p in onnx.load(str(tmp / "model_height.onnx")).metadata_props
    }
    assert height["reg_output_scaling"] == pytest.approx(25.0)


def test_dynamic_batch_and_single_task(exported, tmp_path):
    _, tmp = exported
    out = tmp_path / "seg_only.onnx"
    argv = ["export-onnx", "--checkpoint", str(tmp / "tiny.ckpt"), "-o", str(out)]
    assert main([*argv, "--tasks", "seg", "--dynamic-batch", "--tile-size", "48"]) == 0
    sess = session(out)
    x = np.random.default_rng(0).random((3, 3, 48, 48), dtype=np.float32)
    assert sess.run(None, {"input": x})[0].shape == (3, len(CLASSES), 48, 48)


def test_missing_head_is_a_user_error(tmp_path, capsys):
    model = MultiTaskNet("resnet18", 3, 2, ("seg",), None, 8)
    ckpt = save_model_checkpoint(tmp_path / "seg.ckpt", model, ModelMeta(patch_size=TILE))
    out = tmp_path / "h.onnx"
    argv = ["export-onnx", "--checkpoint", str(ckpt), "-o", str(out), "--tasks", "height"]
    assert main(argv) == 1
    assert "no height head" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(("size", "bins"), [((8, 8), 3), ((8, 8), 6), ((7, 13), 6), ((64, 64), 6)])
def test_fixed_adaptive_pool_is_exact(size, bins):
    x = torch.randn(2, 5, *size)
    expected = torch.nn.AdaptiveAvgPool2d(bins)(x)
    got = FixedAdaptiveAvgPool2d(size, (bins, bins))(x)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_output_paths():
    assert output_paths("a/m.onnx", ["seg"]) == {"seg": Path("a/m.onnx")}
    paths = output_paths("a/m.onnx", ["seg", "height"])
    assert [p.name for p in paths.values()] == ["m_seg.onnx", "m_height.onnx"]
