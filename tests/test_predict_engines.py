"""Numeric engines agree with eager float32; --engine; predict --devices N."""

import re
import sys
import warnings

import numpy as np
import pytest
import rasterio
import torch
from _predict_helpers import textured, tiny_checkpoint, write_raster
from torch import nn

from semimtl_geo.checkpoint import load_model_checkpoint
from semimtl_geo.cli.main import main
from semimtl_geo.errors import UserError
from semimtl_geo.inference import engines, predict_array
from semimtl_geo.inference.engine import (
    _argmax_classes,
    _argmax_classes_numpy,
    _argmax_classes_torch,
)
from semimtl_geo.inference.engines import Engine, float32_outputs, resolve_engine
from semimtl_geo.inference.parallel import worker_devices

#: The agreement an engine must keep with eager float32 (issue 14): class labels and
#: mean absolute height difference in metres.
MIN_CLASS_AGREEMENT = 0.995
MAX_HEIGHT_MAD_M = 0.05

CPU_ENGINES = ["channels-last", "onnxruntime"] + (["bf16"] if engines.cpu_has_bf16() else [])


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    # output stride 16 as the demo's network (ResNet18)
    return tiny_checkpoint(tmp_path_factory.mktemp("eng") / "tiny.ckpt", patch_size=128,
                           output_stride=16)


@pytest.fixture(scope="module")
def reference(ckpt):
    image = textured(200, 260, seed=3)
    return image, predict_array(load_model_checkpoint(ckpt), image, engine="eager")


def _agreement(out: dict, ref: dict) -> tuple[float, float]:
    agree = float((out["class"] == ref["class"]).mean())
    mad = float(np.abs(out["height"] - ref["height"]).mean())
    return agree, mad


@pytest.mark.parametrize("name", CPU_ENGINES)
def test_engine_agrees_with_eager_float32(ckpt, reference, name):
    image, ref = reference
    out = predict_array(load_model_checkpoint(ckpt), image, engine=name)
    agree, mad = _agreement(out, ref)
    assert agree >= MIN_CLASS_AGREEMENT, f"{name}: {agree:.4%} of classes agree"
    assert mad <= MAX_HEIGHT_MAD_M, f"{name}: height mean abs diff {mad:.4f} m"


@pytest.mark.slow
def test_compile_engine_agrees_with_eager_float32(ckpt, reference):
    image, ref = reference
    out = predict_array(load_model_checkpoint(ckpt), image, engine="compile")
    agree, mad = _agreement(out, ref)
    assert agree >= MIN_CLASS_AGREEMENT and mad <= MAX_HEIGHT_MAD_M


def test_agreement_check_can_fail(ckpt, reference):
    """Control: a different network (another seed) is far outside the limits."""
    image, ref = reference
    other = tiny_checkpoint(ckpt.parent / "other.ckpt", patch_size=128, output_stride=16,
                            seed=5)
    agree, mad = _agreement(predict_array(load_model_checkpoint(other), image,
                                          engine="eager"), ref)
    assert agree < MIN_CLASS_AGREEMENT or mad > MAX_HEIGHT_MAD_M


def test_bf16_heights_keep_float32_resolution(ckpt):
    """The heads' last layers run in float32: heights are not rounded to bf16 steps."""
    loaded = load_model_checkpoint(ckpt)
    x = torch.randn(1, 3, 64, 64)
    engine = Engine(loaded.model, torch.device("cpu"), "bf16")
    with torch.inference_mode():
        height = engine(x)["height"].flatten()
    as_bf16 = height.to(torch.bfloat16).float()
    assert (height != as_bf16).float().mean() > 0.5  # mostly not representable in bf16


def test_float32_outputs_shares_weights_and_keeps_state_dict(ckpt):
    model = load_model_checkpoint(ckpt).model
    keys = list(model.state_dict())
    view = float32_outputs(model)
    assert list(model.state_dict()) == keys  # the loaded model is untouched
    assert view.heads["seg"].classifier.module.weight is model.heads["seg"].classifier.weight
    assert view.encoder is not model.encoder
    assert next(view.encoder.parameters()) is next(model.encoder.parameters())


def test_auto_engine_follows_cpu_flags(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(engines, "cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16"}))
    assert resolve_engine("auto", cpu) == "bf16"
    monkeypatch.setattr(engines, "cpu_flags", lambda: frozenset({"avx2"}))
    assert resolve_engine("auto", cpu) == "onnxruntime"
    monkeypatch.setattr(engines, "_onnxruntime_available", lambda: False)
    assert resolve_engine("auto", cpu) == "channels-last"
    with pytest.warns(UserWarning, match="emulated"):
        assert resolve_engine("bf16", cpu) == "bf16"


def test_engine_errors_are_one_sentence():
    with pytest.raises(UserError, match="Unknown engine 'fp8'"):
        resolve_engine("fp8", torch.device("cpu"))
    with pytest.raises(UserError, match="CPU only"):
        resolve_engine("onnxruntime", torch.device("cuda"))


def test_cli_engine_option_is_used(tmp_path, ckpt, monkeypatch):
    src = write_raster(tmp_path / "e.tif", textured(70, 90))
    seen = []
    real = Engine.__init__

    def spy(self, model, device, name):
        seen.append(name)
        real(self, model, device, name)

    monkeypatch.setattr(Engine, "__init__", spy)
    assert main(["predict", str(src), "-o", str(tmp_path / "o"), "--checkpoint", str(ckpt),
                 "--device", "cpu", "--no-preview", "--engine", "channels-last"]) == 0
    assert seen == ["channels-last"]
    assert main(["predict", str(src), "-o", str(tmp_path / "o2"), "--checkpoint", str(ckpt),
                 "--device", "cpu", "--engine", "fp8"]) == 2  # click lists the choices


def test_cog_outputs_are_zstd_compressed(tmp_path, ckpt):
    src = write_raster(tmp_path / "z.tif", textured(70, 90))
    out = tmp_path / "o"
    assert main(["predict", str(src), "-o", str(out), "--checkpoint", str(ckpt),
                 "--device", "cpu", "--no-preview"]) == 0
    for name in ("z_class.tif", "z_height.tif"):
        with rasterio.open(out / name) as r:
            assert r.compression.name.lower() == "zstd"
            assert r.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"


def test_devices_spread_inputs_over_cpu_workers(tmp_path, ckpt, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(3):
        write_raster(inputs / f"t{i}.tif", textured(64 + 8 * i, 80, seed=i))
    broken = tmp_path / "broken.tif"  # a file named on the command line is taken as it is
    broken.write_bytes(b"II*\x00" + bytes(300))
    common = ["--checkpoint", str(ckpt), "--device", "cpu", "--no-preview", "--engine", "eager",
              "--confidence"]  # options reach the workers
    rc = main(["predict", str(inputs), str(broken), "-o", str(tmp_path / "par"),
               "--devices", "2", *common])
    captured = capsys.readouterr()
    assert rc == 1
    assert "broken.tif" in captured.err and "could not be read" in captured.err
    assert "Traceback" not in captured.err
    assert "1 input(s) failed" in captured.err
    for i in range(3):  # each input predicted exactly once
        assert len(re.findall(rf"^t{i}\.tif: \d+ windows", captured.out, re.M)) == 1
    assert main(["predict", str(inputs / "t0.tif"), str(inputs / "t1.tif"),
                 str(inputs / "t2.tif"), "-o", str(tmp_path / "seq"), *common]) == 0
    for i in range(3):
        for suffix in ("_class.tif", "_height.tif", "_confidence.tif"):
            with rasterio.open(tmp_path / "par" / f"t{i}{suffix}") as a, \
                    rasterio.open(tmp_path / "seq" / f"t{i}{suffix}") as b:
                np.testing.assert_allclose(a.read(1), b.read(1), rtol=1e-5)  # threads differ
    assert not [p for p in (tmp_path / "par").iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("argmax", [_argmax_classes, _argmax_classes_numpy,
                                    _argmax_classes_torch])
def test_argmax_of_class_sums_matches_torch_with_ties(argmax):
    gen = torch.Generator().manual_seed(3)
    sums = torch.randint(0, 4, (6, 9, 11), generator=gen).float()  # many ties
    sums[:, 0, 0] = 2.0  # all equal: the first class, as torch.argmax
    for view in (sums, sums[:, 2:7, 3:], sums[:1]):
        got = argmax(view)
        assert got.dtype == torch.uint8
        assert torch.equal(got, view.argmax(0).to(torch.uint8))
    wide = torch.randint(0, 3, (40, 5, 7), generator=gen).float()  # 40 classes
    assert torch.equal(argmax(wide), wide.argmax(0).to(torch.uint8))


def test_argmax_of_class_sums_with_nan_gives_the_last_class_on_every_path():
    """A NaN sum makes the maximum NaN, equal to nothing: the last class, as before."""
    sums = torch.rand(6, 4, 4)
    sums[2, 1, 1] = float("nan")
    for argmax in (_argmax_classes_numpy, _argmax_classes_torch):
        got = argmax(sums)
        assert got[1, 1] == 5
        assert torch.equal(got[0], sums[:, 0].argmax(0).to(torch.uint8))


def test_engines_hand_back_float32_nchw(ckpt):
    loaded = load_model_checkpoint(ckpt)
    out = Engine(loaded.model, torch.device("cpu"), "channels-last")(
        torch.zeros(2, loaded.model.in_channels, 32, 32))
    for value in out.values():
        assert value.dtype == torch.float32 and value.is_contiguous()


def test_devices_needs_gpus_it_can_see():
    if torch.cuda.is_available():
        with pytest.raises(UserError, match="GPUs"):
            worker_devices("cuda", torch.cuda.device_count() + 1)
    else:
        with pytest.raises(UserError, match="CUDA is not available"):
            worker_devices("cuda", 2)
    assert worker_devices("cpu", 3) == ["cpu", "cpu", "cpu"]


@pytest.mark.gpu
def test_cuda_pipeline_matches_cpu(ckpt, reference):
    """On CUDA the accumulators stay on the GPU; results match the CPU float32 path."""
    image, ref = reference
    out = predict_array(load_model_checkpoint(ckpt), image, device="cuda", engine="eager")
    agree, mad = _agreement(out, ref)
    assert agree >= MIN_CLASS_AGREEMENT and mad <= MAX_HEIGHT_MAD_M
    out = predict_array(load_model_checkpoint(ckpt), image, device="cuda", engine="bf16")
    agree, mad = _agreement(out, ref)
    assert agree >= MIN_CLASS_AGREEMENT and mad <= MAX_HEIGHT_MAD_M


class _PoolNet(nn.Module):
    """Two heads on a conv body with a PSP-like 3x3 pooling branch (3 does not divide 16).

    Small enough that an ONNX export takes well under a second; the adaptive pool has no
    ONNX form unless the exporter's copy is frozen for the window size first.
    """

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.body = nn.Conv2d(2, 4, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(3)
        self.heads = nn.ModuleDict({"seg": nn.Conv2d(4, 3, 1), "height": nn.Conv2d(4, 1, 1)})
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = torch.relu(self.body(x))
        f = f + nn.functional.interpolate(self.pool(f), size=f.shape[-2:], mode="nearest")
        return {t: head(f) for t, head in self.heads.items()}


def test_onnx_engine_matches_the_network_per_window_size_and_batch(monkeypatch):
    net = _PoolNet().eval()
    engine = Engine(net, torch.device("cpu"), "onnxruntime")
    exports = []
    real_session = engines._onnx_session
    monkeypatch.setattr(engines, "_onnx_session",
                        lambda model, example: exports.append(tuple(example.shape))
                        or real_session(model, example))
    gen = torch.Generator().manual_seed(1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the exporter's notices stay inside the engine
        for shape in [(1, 2, 16, 24), (3, 2, 16, 24), (2, 2, 8, 24), (2, 2, 16, 8)]:
            x = torch.randn(shape, generator=gen)
            out = engine(x)
            with torch.no_grad():
                ref = net(x)
            assert list(out) == ["seg", "height"]
            for task in ("seg", "height"):
                assert out[task].dtype == torch.float32
                assert out[task].shape == ref[task].shape
                torch.testing.assert_close(out[task], ref[task], rtol=1e-4, atol=1e-4)
    # one export per window size (16x24 served batches of 1 and 3), from one window
    assert exports == [(1, 2, 16, 24), (1, 2, 8, 24), (1, 2, 16, 8)]
    assert sorted(engine._sessions) == [(8, 24), (16, 8), (16, 24)]
    assert isinstance(net.pool, nn.AdaptiveAvgPool2d)  # the export froze a copy
    assert net.training is False


def test_onnx_session_uses_the_torch_thread_count_and_full_optimisation(monkeypatch):
    import onnxruntime as ort

    seen = {}

    class Spy(ort.InferenceSession):
        def __init__(self, model, options, providers):
            seen.update(threads=options.intra_op_num_threads,
                        level=options.graph_optimization_level,
                        severity=options.log_severity_level, providers=providers)
            super().__init__(model, options, providers=providers)

    monkeypatch.setattr(ort, "InferenceSession", Spy)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 3)
    engines._onnx_session(_PoolNet().eval(), torch.zeros(1, 2, 16, 16))
    assert seen == {"threads": 3, "level": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
                    "severity": 3, "providers": ["CPUExecutionProvider"]}


def test_tuple_outputs_follow_the_task_order():
    net = _PoolNet().eval()
    x = torch.randn(1, 2, 8, 8)
    with torch.no_grad():
        out = engines._TupleOutputs(net, ("height", "seg"))(x)
        ref = net(x)
    assert [t.shape[1] for t in out] == [1, 3]
    assert torch.equal(out[0], ref["height"]) and torch.equal(out[1], ref["seg"])


def test_compiled_graph_pads_short_batches_and_trims_the_outputs(monkeypatch):
    """``compile`` keeps one static batch size: shorter batches are padded with zeros."""
    net = _PoolNet().eval()
    seen = []
    calls = {}

    def fake_compile(model, device):
        calls["device"] = device

        def run(x):
            seen.append(x.shape[0])
            return model(x)
        return run

    monkeypatch.setattr(engines, "_compiled", fake_compile)
    monkeypatch.setattr(engines, "cpu_flags", lambda: frozenset({"avx2"}))  # no bf16
    engine = Engine(net, torch.device("cpu"), "compile")
    assert calls == {"device": torch.device("cpu")}
    assert engine.channels_last and not engine.autocast
    x = torch.randn(3, 2, 8, 8)
    with torch.no_grad():
        first = engine(x)
        short = engine(x[:2])
        ref = net(x[:2])
    assert seen == [3, 3]  # the 2-window batch ran padded to 3
    assert first["seg"].shape[0] == 3 and short["seg"].shape[0] == 2
    for task in ("seg", "height"):
        torch.testing.assert_close(short[task], ref[task], rtol=1e-5, atol=1e-5)
    monkeypatch.setattr(engines, "cpu_flags", lambda: frozenset({"amx_bf16"}))
    assert Engine(_PoolNet().eval(), torch.device("cpu"), "compile").autocast


def test_compiled_uses_static_shapes_and_frozen_weights(monkeypatch):
    import torch._inductor.config as inductor_config

    seen = {}
    monkeypatch.setattr(inductor_config, "freezing", False)
    monkeypatch.setattr(torch, "compile",
                        lambda model, **kw: seen.update(model=model, **kw) or "compiled")
    net = _PoolNet()
    assert engines._compiled(net, torch.device("cpu")) == "compiled"
    assert seen == {"model": net, "dynamic": False}
    assert inductor_config.freezing is True


def test_auto_engine_on_cuda_follows_bf16_support(monkeypatch):
    """``auto`` on a GPU: bf16 where CUDA supports it, else channels-last (CPU flags aside)."""
    cuda = torch.device("cuda")
    monkeypatch.setattr(engines, "cpu_flags", lambda: frozenset({"amx_bf16"}))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert not engines.device_has_bf16(cuda)
    assert engines.default_engine(cuda) == "channels-last"
    monkeypatch.setattr(engines, "cpu_flags", lambda: frozenset())
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert engines.device_has_bf16(cuda) is True
    assert engines.default_engine(cuda) == "bf16"
    assert not engines.device_has_bf16(torch.device("cpu"))


def test_engine_names_and_messages(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(engines, "cpu_flags", lambda: frozenset({"avx2"}))
    assert resolve_engine("Channels_Last", cpu) == "channels-last"
    assert resolve_engine("onnxruntime", cpu) == "onnxruntime"  # a declared test dependency
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no emulation warning for engines other than bf16
        assert resolve_engine("eager", cpu) == "eager"
    with pytest.raises(UserError) as err:
        resolve_engine("fp8", cpu)
    assert str(err.value) == ("Unknown engine 'fp8'; use one of auto, eager, channels-last, "
                              "bf16, onnxruntime, compile.")
    with pytest.raises(UserError) as err:
        resolve_engine("onnxruntime", torch.device("cuda"))
    assert str(err.value) == (
        "The onnxruntime engine runs on the CPU only; use --device cpu or another --engine "
        "(bf16, channels-last) on the GPU.")
    with pytest.warns(UserWarning) as record:
        resolve_engine("bf16", cpu)
    assert str(record[0].message) == (
        "--engine bf16 on a CPU without native bfloat16 is emulated and slow; 'auto' would "
        "pick a faster engine.")
    assert record[0].filename != engines.__file__  # points at the caller
    monkeypatch.setattr(engines, "_onnxruntime_available", lambda: False)
    with pytest.raises(UserError) as err:
        resolve_engine("onnxruntime", cpu)
    assert str(err.value) == (
        "The onnxruntime engine needs the 'onnx' and 'onnxruntime' packages; install them "
        "with pip install 'semimtl-geo[onnx]', or pick another --engine.")


def test_onnxruntime_is_unavailable_when_either_package_is_missing(monkeypatch):
    assert engines._onnxruntime_available()
    for name in ("onnx", "onnxruntime"):
        with monkeypatch.context() as m:
            m.setitem(sys.modules, name, None)  # import raises ImportError
            assert engines._onnxruntime_available() is False


def test_float32_outputs_wraps_the_last_conv_of_nested_heads():
    conv = nn.Conv2d(2, 2, 1)
    assert float32_outputs(conv) is conv  # no heads: returned as it is

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.heads = nn.ModuleDict({
                "plain": nn.Identity(),  # no convolution: left alone, the next head is not
                "seg": nn.Sequential(nn.Sequential(nn.Conv2d(2, 2, 1), nn.ReLU()),
                                     nn.Sequential(nn.Conv2d(2, 3, 1))),
                "height": nn.Conv2d(2, 1, 1),  # the head is a single convolution
            })

    view = float32_outputs(Net())
    assert isinstance(view.heads["plain"], nn.Identity)
    seg = view.heads["seg"]
    assert isinstance(seg[1][0], engines._Float32) and isinstance(seg[0][0], nn.Conv2d)
    assert isinstance(view.heads["height"], engines._Float32)  # was an AttributeError
    x = torch.randn(1, 2, 4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = {t: view.heads[t](x) for t in ("seg", "height")}
    assert out["seg"].dtype == out["height"].dtype == torch.float32
    # single-convolution heads one after the other: each one is wrapped
    assert all(isinstance(h, engines._Float32) for h in float32_outputs(_PoolNet()).heads.values())


class _Spy(nn.Module):
    """One convolution and no ``heads``; records how each batch reaches it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)  # 1x1 weights are both formats at once
        self.seen: list[tuple[bool, bool, torch.dtype | None]] = []

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        autocast = torch.is_autocast_enabled("cpu")
        self.seen.append((x.is_contiguous(memory_format=torch.channels_last), autocast,
                          torch.get_autocast_dtype("cpu") if autocast else None))
        return {"seg": self.conv(x)}


@pytest.mark.parametrize("name, channels_last, autocast", [
    ("eager", False, None), ("channels-last", True, None), ("bf16", True, torch.bfloat16)])
def test_engines_run_the_network_in_their_memory_format_and_precision(name, channels_last,
                                                                      autocast):
    net = _Spy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # bf16 emulated on this CPU
        engine = Engine(net, torch.device("cpu"), name)
    assert net.conv.weight.is_contiguous(memory_format=torch.channels_last) == channels_last
    x = torch.randn(3, 2, 5, 7)  # a batch of 3 (not the 2 channels)
    with torch.inference_mode():
        out = engine(x)["seg"]
    assert net.seen == [(channels_last, autocast is not None, autocast)]
    # outputs leave as float32 NCHW even where the network answered in bf16 (no heads here)
    assert out.dtype == torch.float32 and out.shape == (3, 3, 5, 7) and out.is_contiguous()
    with torch.no_grad():
        ref = net.conv(x)
    tol = 0.1 if autocast else 1e-5
    torch.testing.assert_close(out, ref, rtol=tol, atol=tol)
