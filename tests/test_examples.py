"""The scripts in ``examples/`` run end to end at a tiny size and produce what they claim.

One module-scoped chain keeps the file fast: train once (``train_from_python.py``),
predict a folder holding the prepared tiles plus a corrupt file (``predict_folder.py``),
then read the outputs (``read_outputs.py``, in-process and as a subprocess).
"""

import importlib.util
import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import geopandas as gpd
import numpy as np
import pytest
import rasterio

from semimtl_geo.checkpoint import load_model_checkpoint
from semimtl_geo.errors import UserError

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TINY_TRAIN = ["--size-potsdam", "200", "--size-vaihingen", "130", "--tiles", "2",
              "--steps", "2", "--crop", "64", "--batch", "1", "--patch", "64",
              "--encoder", "resnet18", "--output-stride", "32", "--device", "cpu"]


def load_example(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` as a module (the folder is not a package)."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(output folder, model.pt) of a 2-step tiny run of ``train_from_python.py``."""
    out = tmp_path_factory.mktemp("example_train")
    model_path = load_example("train_from_python").main(["-o", str(out), *TINY_TRAIN])
    return out, model_path


@pytest.fixture(scope="module")
def predicted(trained: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory):
    """Run ``predict_folder.py`` on the prepared Potsdam tiles plus one corrupt file."""
    out, model_path = trained
    inputs = tmp_path_factory.mktemp("example_inputs")
    tiles = sorted((out / "prepared" / "potsdam" / "image").glob("*.tif"))
    for tile in tiles:
        shutil.copy(tile, inputs / tile.name)
    (inputs / "corrupt.tif").write_bytes(b"II*\x00 not really a tiff")
    (inputs / "notes.txt").write_text("not a raster, ignored")
    pred = tmp_path_factory.mktemp("example_predict")
    status = load_example("predict_folder").main(
        [str(inputs), "--checkpoint", str(model_path), "-o", str(pred), "--device", "cpu",
         "--vectorize"])
    return inputs, pred, status, tiles, model_path


def test_train_from_python_writes_a_usable_checkpoint(trained, capsys) -> None:
    out, model_path = trained
    assert model_path == out / "run" / "model.pt" and model_path.is_file()
    assert (out / "run" / "config.yaml").is_file()
    manifest = json.loads((out / "prepared" / "manifest.json").read_text())
    assert set(manifest["datasets"]) == {"potsdam", "vaihingen"}
    loaded = load_model_checkpoint(model_path)
    assert set(loaded.model.tasks) == {"seg", "height"}
    assert list(loaded.meta.classes.names)[1] == "building"
    assert loaded.meta.patch_size == 64 and loaded.meta.gsd == pytest.approx(0.09)
    assert loaded.config["method"] == "semimtl" and loaded.config["mode"] == "m2"
    assert loaded.config["trainer"]["max_steps"] == 2
    assert loaded.config["data"]["datasets"][0]["tasks"] == ["seg"]


def test_train_from_python_rejects_bad_settings_before_any_work(trained, tmp_path) -> None:
    module = load_example("train_from_python")
    with pytest.raises(UserError, match="data.crop_size"):
        module.main(["-o", str(tmp_path / "new"), *TINY_TRAIN, "--crop", "0"])
    assert not (tmp_path / "new").exists()
    out, model_path = trained
    before = model_path.stat().st_mtime_ns
    with pytest.raises(UserError, match="--overwrite"):
        module.main(["-o", str(out), *TINY_TRAIN])
    assert model_path.stat().st_mtime_ns == before


def test_predict_folder_continues_past_a_failing_file(predicted, capsys) -> None:
    inputs, pred, status, tiles, model_path = predicted
    assert status == 1  # one input failed
    assert len(tiles) == 2
    for tile in tiles:
        for suffix in ("_class.tif", "_height.tif", "_class.qml", "_height.qml",
                       "_preview.png", "_classes.gpkg"):
            assert (pred / f"{tile.stem}{suffix}").is_file(), f"{tile.stem}{suffix}"
        with rasterio.open(inputs / tile.name) as src, \
                rasterio.open(pred / f"{tile.stem}_class.tif") as dst:
            assert dst.crs == src.crs and dst.transform == src.transform
            assert dst.shape == src.shape
    assert not list(pred.glob("corrupt*")) and not list(pred.glob("notes*"))
    assert not list(pred.glob(".*"))  # no temporaries left behind

    # a second run refuses to replace the outputs without --overwrite, file by file
    before = (pred / f"{tiles[0].stem}_class.tif").stat().st_mtime_ns
    again = load_example("predict_folder").main(
        [str(inputs), "--checkpoint", str(model_path), "-o", str(pred)])
    assert again == 1
    err = capsys.readouterr().err
    assert err.count("already exists") == 2 and "FAILED corrupt.tif" in err
    assert (pred / f"{tiles[0].stem}_class.tif").stat().st_mtime_ns == before


def test_read_outputs_summarises_areas_heights_and_polygons(predicted, capsys) -> None:
    inputs, pred, _, tiles, _ = predicted
    summary = load_example("read_outputs").main([str(pred), "--min-height", "0.2"])
    assert sorted(summary) == sorted(t.stem for t in tiles)
    for stem, entry in summary.items():
        with rasterio.open(pred / f"{stem}_class.tif") as src:
            classes = src.read(1)
            pixel_area = abs(src.transform.a * src.transform.e)
        with rasterio.open(pred / f"{stem}_height.tif") as src:
            height = src.read(1)
        rows = {r["class_name"]: r for r in entry["classes"]}
        assert len(rows) == 6 and rows["building"]["color"] == "#0000ff"
        assert sum(r["pixels"] for r in rows.values()) == int((classes != 255).sum())
        for r in rows.values():
            inside = classes == r["class_id"]
            assert r["pixels"] == int(inside.sum())
            assert r["area_m2"] == pytest.approx(inside.sum() * pixel_area)
            if inside.any():
                assert r["height_mean"] == pytest.approx(float(height[inside].mean()), rel=1e-4)
            else:
                assert np.isnan(r["height_mean"])
        polygons = gpd.read_file(pred / f"{stem}_classes.gpkg")
        tall = polygons[(polygons.class_name == "building") & (polygons.height_mean > 0.2)]
        assert entry["tall"]["count"] == len(tall)
        assert entry["tall"]["area_m2"] == pytest.approx(float(tall.area_m2.sum()))
    printed = capsys.readouterr().out
    assert "area m²" in printed and "building polygon(s)" in printed

    # the same script as a user runs it, with the project's interpreter
    run = subprocess.run([sys.executable, str(EXAMPLES / "read_outputs.py"), str(pred)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert all(t.stem in run.stdout for t in tiles)
    empty = subprocess.run([sys.executable, str(EXAMPLES / "read_outputs.py"), str(inputs)],
                           capture_output=True, text=True, timeout=120)
    assert empty.returncode == 1 and "no *_class.tif" in empty.stderr


def readme_commands() -> list[list[str]]:
    """The ``python examples/...`` commands of the README code blocks, as argv lists."""
    text = (EXAMPLES / "README.md").read_text().replace("\\\n", " ")
    return [shlex.split(line.strip()) for line in text.splitlines()
            if line.strip().startswith(".venv/bin/python examples/")]


def test_examples_readme_commands_match_the_scripts() -> None:
    scripts = sorted(p.name for p in EXAMPLES.glob("*.py"))
    assert scripts == ["predict_folder.py", "read_outputs.py", "train_from_python.py"]
    commands = readme_commands()
    assert sorted({Path(c[1]).name for c in commands}) == scripts
    for argv in commands:
        module = load_example(Path(argv[1]).stem)
        module.parse_args(argv[2:])  # argparse exits (SystemExit) on a stale flag
