"""Opening a checkpoint never runs code from it (issue 17).

Three live attacks (tests/_malicious.py: a ``__reduce__`` payload at the top level, nested
in the model payload, inside a Lightning checkpoint) go through every command and API
entry point that opens a checkpoint. Each must end in one sentence and a non-zero exit
(a :class:`UserError` for the API) without the payload's marker file appearing, and no
entry point but ``convert-checkpoint`` may call ``torch.load`` at all.
"""

import re
import shutil
import sys
from pathlib import Path

import _toy_kind as toy
import pytest
import torch
import yaml
from _malicious import KINDS, build_malicious
from _predict_helpers import textured, tiny_checkpoint, write_raster

from semimtl_geo.checkpoint import load_model_checkpoint
from semimtl_geo.checkpoint_file import read_checkpoint_file
from semimtl_geo.cli.main import main
from semimtl_geo.errors import UserError
from semimtl_geo.models.encoder import build_encoder
from semimtl_geo.qgis_plugin import runner
from semimtl_geo.training.engine import SafeCheckpointIO


@pytest.fixture(scope="module")
def evil(tmp_path_factory):
    root = tmp_path_factory.mktemp("evil")
    marker = root / "PWNED"
    paths = build_malicious(root / "files", marker)
    good = tiny_checkpoint(root / "good.pt", output_stride=32)
    raster = write_raster(root / "tile.tif", textured(64, 64))
    return {"marker": marker, "paths": paths, "good": good, "raster": raster}


@pytest.fixture(autouse=True)
def torch_load_spy(monkeypatch):
    """Record every torch.load; the escape hatch that forces full unpickling is set."""
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    calls = []
    real = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    return calls


@pytest.fixture
def toy_kind():
    toy.register()
    yield
    toy.unregister()


def assert_one_sentence(message: str, path: Path) -> None:
    """A single sentence that names the checkpoint (paths hold dots, so mask them)."""
    text = message.replace(str(path), "PATH")
    assert "PATH" in text, message
    assert text.endswith("."), message
    assert "Traceback" not in text and "\n" not in text.strip(), message
    assert not re.search(r"[.!?]['\")]?\s+[A-Z]", text), f"more than one sentence: {message}"


def assert_cli_refused(status: int, err: str, path: Path, marker: Path) -> None:
    assert status != 0
    assert not marker.exists(), "the checkpoint's code ran"
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("Error: "), err[-2000:]
    assert sum(line.startswith("Error: ") for line in lines) == 1, err[-2000:]
    assert_one_sentence(lines[-1].removeprefix("Error: "), path)


# ---------------------------------------------------------------- Python API


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "opener",
    [
        load_model_checkpoint,
        read_checkpoint_file,
        # what trainer.fit(ckpt_path=...) calls on --resume, even asked for weights_only=False
        lambda p: SafeCheckpointIO().load_checkpoint(p, weights_only=False),
    ],
    ids=["load_model_checkpoint", "read_checkpoint_file", "lightning_checkpoint_io"],
)
def test_api_refuses_without_running_code(evil, torch_load_spy, kind, opener):
    path = evil["paths"][kind]
    with pytest.raises(UserError) as info:
        opener(path)
    assert not evil["marker"].exists(), "the checkpoint's code ran"
    assert_one_sentence(str(info.value), path)
    assert "convert-checkpoint" in str(info.value)
    assert torch_load_spy == []


@pytest.mark.parametrize("kind", KINDS)
def test_encoder_weights_file_refused_without_running_code(evil, torch_load_spy, kind):
    """``model.encoder_weights: FILE`` (a .pth) goes through torch's restricted unpickler."""
    path = evil["paths"][kind]
    with pytest.raises(UserError) as info:
        build_encoder("resnet18", weights=path)
    assert not evil["marker"].exists(), "the weights file's code ran"
    assert_one_sentence(str(info.value), path)
    assert torch_load_spy == [True]  # explicit, so the FORCE_NO_WEIGHTS_ONLY variable loses


# ---------------------------------------------------------------- every command


def _commands(evil, path: Path, tmp: Path) -> dict[str, list[str]]:
    return {
        "predict": ["predict", str(evil["raster"]), "-o", str(tmp / "out"), "--checkpoint",
                    str(path), "--device", "cpu", "--no-preview"],
        "evaluate": ["evaluate", "-c", str(path), "-o", str(tmp / "report"), "--device", "cpu"],
        "evaluate_baseline_seg": ["evaluate", "-c", str(evil["good"]), "--baseline-seg",
                                  str(path), "-o", str(tmp / "report"), "--device", "cpu"],
        "evaluate_baseline_height": ["evaluate", "-c", str(evil["good"]), "--baseline-height",
                                     str(path), "-o", str(tmp / "report"), "--device", "cpu"],
        "export_onnx": ["export-onnx", "--checkpoint", str(path), "-o", str(tmp / "m.onnx")],
        "convert_checkpoint": ["convert-checkpoint", str(path), "-o", str(tmp / "safe.pt")],
    }


COMMANDS = ["predict", "evaluate", "evaluate_baseline_seg", "evaluate_baseline_height",
            "export_onnx", "convert_checkpoint"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("command", COMMANDS)
def test_commands_refuse_without_running_code(
    evil, torch_load_spy, capsys, tmp_path, kind, command
):
    path = evil["paths"][kind]
    status = main(_commands(evil, path, tmp_path)[command])
    assert_cli_refused(status, capsys.readouterr().err, path, evil["marker"])
    assert not any(tmp_path.iterdir()), "nothing may be written"
    if command == "convert_checkpoint":  # only torch's restricted unpickler, by default
        assert torch_load_spy == [True]
    else:
        assert torch_load_spy == []


@pytest.mark.parametrize("kind", KINDS)
def test_train_resume_refuses_without_running_code(
    evil, torch_load_spy, toy_kind, capsys, tmp_path, kind
):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(toy.toy_config_dict("jtl")))
    last = run / "checkpoints" / "last.ckpt"
    shutil.copy(evil["paths"][kind], last)
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    status = main(["train", "-o", str(run), "--resume"])
    assert_cli_refused(status, capsys.readouterr().err, last, evil["marker"])
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before  # nothing written
    assert torch_load_spy == []


@pytest.mark.parametrize("kind", KINDS)
def test_qgis_plugin_runner_refuses_without_running_code(evil, tmp_path, kind):
    """The plugin's Predict runs the CLI through runner.run_cli; the same file, the same end."""
    cli = runner.find_cli(str(Path(sys.executable).parent / "semimtl-geo"))
    path = evil["paths"][kind]
    env = {**runner.clean_env(), "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}
    result = runner.run_cli(
        [cli, "predict", str(evil["raster"]), "-o", str(tmp_path / "out"), "--checkpoint",
         str(path), "--device", "cpu"],
        env=env,
    )
    assert not result.ok
    assert not evil["marker"].exists(), "the checkpoint's code ran"
    assert result.error is not None and result.error.startswith(f"Checkpoint '{path}'")
    assert_one_sentence(result.error, path)
    assert not (tmp_path / "out").exists()


def test_unrestricted_conversion_is_the_only_way_to_run_a_pickle(evil, capsys, tmp_path):
    """--unrestricted really unpickles (the warning is not idle): the marker appears."""
    status = main(["convert-checkpoint", str(evil["paths"]["in_payload"]), "-o",
                   str(tmp_path / "x.pt"), "--unrestricted"])
    err = capsys.readouterr().err
    try:
        assert evil["marker"].exists()
    finally:
        evil["marker"].unlink(missing_ok=True)
    assert "convert only files from a source you trust" in err
    assert status in (0, 1)


# ---------------------------------------------------------------- rasters

EVIL_VRT = """<VRTDataset rasterXSize="64" rasterYSize="64">
  <SRS>EPSG:32633</SRS>
  <GeoTransform>500000, 0.09, 0, 5800000, 0, -0.09</GeoTransform>
  {bands}
</VRTDataset>"""
EVIL_BAND = """<VRTRasterBand dataType="Byte" band="{n}" subClass="VRTDerivedRasterBand">
    <PixelFunctionType>f</PixelFunctionType>
    <PixelFunctionLanguage>Python</PixelFunctionLanguage>
    <PixelFunctionCode><![CDATA[
def f(in_ar, out_ar, *args, **kwargs):
    open({marker!r}, "w").close()
    out_ar[:] = 100
]]></PixelFunctionCode>
  </VRTRasterBand>"""


def test_vrt_python_pixel_functions_never_run(evil, monkeypatch, capsys, tmp_path):
    """A VRT may embed Python that GDAL runs on read; the CLI switches that off for good."""
    import rasterio

    marker = tmp_path / "VRT_PWNED"
    bands = "\n".join(EVIL_BAND.format(n=n, marker=str(marker)) for n in (1, 2, 3))
    vrt = tmp_path / "evil.vrt"
    vrt.write_text(EVIL_VRT.format(bands=bands))
    try:
        with rasterio.Env(GDAL_VRT_ENABLE_PYTHON="YES"), rasterio.open(vrt) as ds:
            ds.read(1)
    except Exception:
        pass
    if not marker.exists():
        pytest.skip("this GDAL cannot run Python pixel functions at all")
    marker.unlink()
    monkeypatch.setenv("GDAL_VRT_ENABLE_PYTHON", "YES")  # a user's environment that allows it
    status = main(["predict", str(vrt), "-o", str(tmp_path / "out"), "--checkpoint",
                   str(evil["good"]), "--device", "cpu", "--no-preview"])
    err = capsys.readouterr().err
    assert not marker.exists(), "the VRT's Python ran"
    assert status != 0 and "Traceback" not in err, err[-2000:]


def test_exported_onnx_files_hold_only_standard_operators(evil, tmp_path):
    """What README's Security section says of the ONNX files export-onnx writes."""
    import onnx

    assert main(["export-onnx", "--checkpoint", str(evil["good"]), "-o",
                 str(tmp_path / "m.onnx")]) == 0
    for name in ("m_seg.onnx", "m_height.onnx"):
        model = onnx.load(str(tmp_path / name), load_external_data=False)
        assert {node.domain for node in model.graph.node} <= {"", "ai.onnx"}
        assert {op.domain for op in model.opset_import} <= {"", "ai.onnx"}
        assert not model.functions
        assert all(t.data_location == onnx.TensorProto.DEFAULT for t in model.graph.initializer)
