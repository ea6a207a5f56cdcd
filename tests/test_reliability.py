"""Bad-input campaign (issue 13): each case ends in one sentence, no lost or wrong output.

Every test here reproduces a case the campaign found (a traceback, a silent wrong result
or lost work) and failed before the fix.
"""

import errno
import os
from pathlib import Path
from types import SimpleNamespace

import _toy_kind as toy
import numpy as np
import pytest
import rasterio
import torch
import yaml
from _cli_text import without_logging_errors
from _predict_helpers import textured, tiny_checkpoint, write_raster
from affine import Affine

from semimtl_geo.checkpoint import LoadedModel, ModelMeta, load_model_checkpoint
from semimtl_geo.classes import ISPRS_CLASSES, ClassTable
from semimtl_geo.cli.main import main
from semimtl_geo.errors import UserError
from semimtl_geo.outputs import check_output_dir, check_output_file

FAST = ["--device", "cpu", "--no-preview", "--batch-size", "8"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.ckpt")


@pytest.fixture
def toy_kind():
    toy.register()
    yield from toy.single_thread()
    toy.unregister()


def _one_sentence(err: str, *needles: str) -> None:
    err = without_logging_errors(err)
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("Error:")]
    assert lines, err
    for needle in needles:
        assert needle in err, (needle, err)


# --------------------------------------------------------------- checkpoints and devices


def test_checkpoint_run_folder_means_its_model_pt(tmp_path, ckpt, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.pt").write_bytes(ckpt.read_bytes())
    assert load_model_checkpoint(run).path == run / "model.pt"
    image = write_raster(tmp_path / "a.tif", textured(40, 40))
    assert main(["predict", str(image), "-o", str(tmp_path / "out"), "--checkpoint", str(run),
                 *FAST]) == 0
    assert (tmp_path / "out" / "a_class.tif").is_file()
    empty = tmp_path / "empty_run"
    empty.mkdir()
    assert main(["predict", str(image), "-o", str(tmp_path / "o2"), "--checkpoint", str(empty),
                 *FAST]) == 1
    err = capsys.readouterr().err
    _one_sentence(err, "holds no model.pt")
    assert "does not exist" not in err


@pytest.mark.parametrize("device", ["tpu", "cuda:x", "banana"])
def test_unknown_device_is_one_sentence(tmp_path, ckpt, capsys, device):
    image = write_raster(tmp_path / "a.tif", textured(40, 40))
    assert main(["predict", str(image), "-o", str(tmp_path / "out"), "--checkpoint", str(ckpt),
                 "--device", device]) == 1
    _one_sentence(capsys.readouterr().err, f"Device '{device}'", "cpu")
    assert main(["evaluate", "-c", str(ckpt), "-o", str(tmp_path / "rep"), "--device",
                 device]) == 1
    _one_sentence(capsys.readouterr().err, f"Device '{device}'")
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a CPU-only machine")
def test_missing_cuda_is_one_sentence(tmp_path, ckpt, capsys):
    from semimtl_geo.inference.predictor import resolve_device

    for device in ("cuda", "cuda:3"):
        with pytest.raises(UserError, match="CUDA is not available"):
            resolve_device(device)


# --------------------------------------------------------------- train


def _toy_yaml(tmp_path: Path, **trainer) -> Path:
    config = tmp_path / "toy.yaml"
    config.write_text(yaml.safe_dump(toy.toy_config_dict(
        "stl_seg", **{"max_steps": 1, "steps_per_epoch": 1, **trainer})))
    return config


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.lr=-1", "'optim.lr' must be positive"),
        ("optim.d_lr=0", "'optim.d_lr' must be positive"),
        ("optim.momentum=1.5", "'optim.momentum' must be below 1"),
        ("optim.weight_decay=-0.1", "'optim.weight_decay' must be zero or positive"),
        ("optim.d_betas=[0.9,1.5]", "'optim.d_betas' must hold two numbers in [0, 1)"),
        ("loss.w_height=-1", "'loss.w_height' must be zero or positive"),
        ("loss.berhu_ratio=0", "'loss.berhu_ratio' must be positive"),
        ("data.num_workers=-2", "'data.num_workers' must be zero or positive"),
        ("trainer.accelerator=tpu", "'trainer.accelerator' must be one of"),
        ("trainer.cpu_threads=0", "'trainer.cpu_threads' must be null or positive"),
    ],
)
def test_bad_numbers_are_refused_before_a_run_folder_exists(
    tmp_path, capsys, toy_kind, override, message
):
    config = _toy_yaml(tmp_path)
    run = tmp_path / "run"
    assert main(["train", "-c", str(config), "-o", str(run), override]) == 1
    _one_sentence(capsys.readouterr().err, message)
    assert not run.exists()  # no stub run folder


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_gpu_accelerator_without_gpu_is_one_sentence(tmp_path, capsys, toy_kind):
    config = _toy_yaml(tmp_path)
    assert main(["train", "-c", str(config), "-o", str(tmp_path / "run"),
                 "--accelerator", "gpu"]) == 1
    _one_sentence(capsys.readouterr().err, "no CUDA GPU is available", "--accelerator cpu")
    assert not (tmp_path / "run").exists()


def test_train_never_silently_replaces_a_run(tmp_path, capsys, toy_kind):
    config = _toy_yaml(tmp_path, max_steps=2, preview_every=1)
    run = tmp_path / "run"
    assert main(["train", "-c", str(config), "-o", str(run)]) == 0
    before = {p: p.read_bytes() for p in (run / "model.pt", run / "config.yaml",
                                          run / "checkpoints" / "last.ckpt")}
    assert sorted(p.name for p in (run / "previews").iterdir()) == [
        "iter_0000001.png", "iter_0000002.png"]
    (run / "notes.txt").write_text("mine")

    assert main(["train", "-c", str(config), "-o", str(run), "--max-steps", "1"]) == 1
    _one_sentence(capsys.readouterr().err, "already holds a training run", "--resume",
                  "--overwrite")
    assert {p: p.read_bytes() for p in before} == before  # nothing replaced

    assert main(["train", "-c", str(config), "-o", str(run), "--overwrite", "--resume"]) == 1
    _one_sentence(capsys.readouterr().err, "pass only one")

    # --overwrite with a config that cannot start keeps the old run
    assert main(["train", "-c", str(config), "-o", str(run), "--overwrite",
                 "data.datasets.0.kind=nope"]) == 1
    assert {p: p.read_bytes() for p in before} == before

    assert main(["train", "-c", str(config), "-o", str(run), "--overwrite", "--max-steps",
                 "1"]) == 0
    # a clean replacement: no preview of the old run is mixed with the new one
    assert sorted(p.name for p in (run / "previews").iterdir()) == ["iter_0000001.png"]
    assert len(list((run / "logs").glob("version_*"))) == 1
    assert (run / "notes.txt").read_text() == "mine"  # files that are not the run's stay
    assert yaml.safe_load((run / "config.yaml").read_text())["trainer"]["max_steps"] == 1


def test_failed_start_leaves_no_stub_run(tmp_path, toy_kind, monkeypatch):
    from semimtl_geo.training import engine
    from semimtl_geo.training.config import config_from_dict

    def explode(self, batch, batch_idx):
        raise RuntimeError("boom")

    monkeypatch.setattr(engine.SemiMTLModule, "training_step", explode)
    cfg = config_from_dict(toy.toy_config_dict("stl_seg", max_steps=1, steps_per_epoch=1))
    with pytest.raises(RuntimeError, match="boom"):
        engine.train(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()
    # a folder the user made is kept (emptied of what the failed run wrote)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "keep.txt").write_text("x")
    with pytest.raises(RuntimeError, match="boom"):
        engine.train(cfg, tmp_path / "mine")
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["keep.txt"]


# --------------------------------------------------------------- other commands


def test_export_tile_size_zero_is_refused(tmp_path, ckpt, capsys):
    out = tmp_path / "m.onnx"
    assert main(["export-onnx", "--checkpoint", str(ckpt), "-o", str(out),
                 "--tile-size", "0"]) == 1
    _one_sentence(capsys.readouterr().err, "Tile size 0 px is too small")
    assert not list(tmp_path.glob("*.onnx"))


@pytest.mark.parametrize("option", ["--potsdam-height-scale", "--vaihingen-height-scale"])
@pytest.mark.parametrize("value", ["-3", "0", "nan"])
def test_prepare_refuses_non_positive_height_scale(tmp_path, capsys, option, value):
    out = tmp_path / "prepared"
    assert main(["prepare-isprs", "--potsdam", str(tmp_path), "-o", str(out), option,
                 value]) == 1
    _one_sentence(capsys.readouterr().err, "height scale must be positive", option)
    assert not out.exists()


def test_qgis_install_checks_profile_and_cli(tmp_path, capsys):
    missing = tmp_path / "no" / "such" / "profile"
    assert main(["qgis-plugin", "install", "--profile-dir", str(missing)]) == 1
    _one_sentence(capsys.readouterr().err, "does not exist")
    assert not (tmp_path / "no").exists()
    profile = tmp_path / "profile"
    profile.mkdir()
    assert main(["qgis-plugin", "install", "--profile-dir", str(profile), "--cli",
                 str(tmp_path / "nonexistent")]) == 1
    _one_sentence(capsys.readouterr().err, "is not an executable file")
    assert not (profile / "python").exists()


def test_band_message_suggests_only_bands_that_exist(tmp_path, ckpt, capsys):
    one = write_raster(tmp_path / "one.tif", textured(40, 40, count=1))
    assert main(["predict", str(one), "-o", str(tmp_path / "out"), "--checkpoint", str(ckpt),
                 *FAST]) == 1
    err = capsys.readouterr().err
    _one_sentence(err, "has 1 band(s) but the model expects 3")
    assert "--bands 1,2,3" not in err
    five = write_raster(tmp_path / "five.tif", textured(40, 40, count=5))
    assert main(["predict", str(five), "-o", str(tmp_path / "out"), "--checkpoint", str(ckpt),
                 *FAST]) == 1
    err = capsys.readouterr().err
    _one_sentence(err, "--bands 1,2,3")
    # and the suggestion works
    assert main(["predict", str(five), "-o", str(tmp_path / "out"), "--checkpoint", str(ckpt),
                 *FAST, "--bands", "1,2,3"]) == 0


def test_evaluate_refuses_a_class_table_that_differs_from_the_labels():
    from semimtl_geo.data.datamodule import (
        DataModule,
        EvalSample,
        KindInfo,
        register_datamodule,
        unregister_kind,
    )
    from semimtl_geo.training.evaluate import evaluate_checkpoints

    seven = ClassTable((*ISPRS_CLASSES.names, "water"), (*ISPRS_CLASSES.colors, (0, 0, 128)))
    mask = np.zeros((4, 4), np.uint8)

    class Six(DataModule):
        kinds = ("six",)

        def describe(self):
            return KindInfo(ISPRS_CLASSES, ["R", "G", "B"], [0.5] * 3, [0.2] * 3, 0.09)

        def train_loader(self, request):
            raise AssertionError("evaluation never asks for training batches")

        def eval_samples(self, split):
            yield EvalSample(np.zeros((3, 4, 4), np.uint8), mask, None, "t")

    register_datamodule(Six, overwrite=True)
    try:
        config = {"data": {"datasets": [{"name": "potsdam", "kind": "six", "root": "",
                                         "tasks": ["seg"]}]}}
        loaded = LoadedModel(SimpleNamespace(tasks=("seg",)), ModelMeta(classes=seven), config,
                             Path("seven.pt"))
        called = []

        def predict(model, image, tasks):
            called.append(1)
            return {"class": np.zeros((4, 4), np.uint8)}

        with pytest.raises(UserError, match="predicts 7 classes .* labelled with 6"):
            evaluate_checkpoints([loaded], predict, progress=False)
        assert not called  # refused before any prediction
        six = LoadedModel(SimpleNamespace(tasks=("seg",)), ModelMeta(), config, Path("six.pt"))
        report = evaluate_checkpoints([six], predict, progress=False)
        assert report["rows"][0]["datasets"]["potsdam"]["seg"]["pAcc"] == 100.0
    finally:
        unregister_kind("six")


def _class_raster(path: Path, transform: Affine, width: int, height: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 6, (height // 4 + 1, width // 4 + 1))
    data = np.kron(blocks, np.ones((4, 4)))[:height, :width].astype(np.uint8)
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=1,
                       dtype="uint8", crs="EPSG:4326", transform=transform) as dst:
        dst.write(data, 1)
    return path


def test_vectorize_areas_on_geographic_rasters_are_exact_everywhere(tmp_path):
    import geopandas as gpd

    from semimtl_geo.inference.vectorize import vectorize_classes

    # the whole globe at 5 degrees: the areas add up to the WGS84 ellipsoid's surface
    world = _class_raster(tmp_path / "world.tif", Affine(5.0, 0, -180, 0, -5.0, 90), 72, 36)
    frame = gpd.read_file(vectorize_classes(world, tmp_path / "world.gpkg", ISPRS_CLASSES))
    assert frame["area_m2"].notna().all()
    assert frame["area_m2"].sum() == pytest.approx(510_065_621_724_088.5, rel=1e-6)
    # next to the pole (no UTM zone) and across the antimeridian
    for name, transform in (("pole", Affine(0.01, 0, 10, 0, -0.01, 90)),
                            ("antimeridian", Affine(0.01, 0, 179.8, 0, -0.01, 10))):
        src = _class_raster(tmp_path / f"{name}.tif", transform, 64, 64, seed=1)
        frame = gpd.read_file(vectorize_classes(src, tmp_path / f"{name}.gpkg", ISPRS_CLASSES))
        assert frame["area_m2"].notna().all() and (frame["area_m2"] > 0).all(), name


# --------------------------------------------------------------- output paths


def _commands(tmp_path: Path, ckpt: Path, blocker: Path) -> dict[str, list[str]]:
    image = write_raster(tmp_path / "img.tif", textured(40, 40))
    config = _toy_yaml(tmp_path)
    return {
        "predict": ["predict", str(image), "-o", str(blocker), "--checkpoint", str(ckpt), *FAST],
        "predict-below": ["predict", str(image), "-o", str(blocker / "sub"), "--checkpoint",
                          str(ckpt), *FAST],
        "evaluate": ["evaluate", "-c", str(ckpt), "-o", str(blocker / "report")],
        "export-onnx": ["export-onnx", "--checkpoint", str(ckpt), "-o",
                        str(blocker / "m.onnx")],
        "train": ["train", "-c", str(config), "-o", str(blocker / "run")],
        "synthesize-isprs": ["synthesize-isprs", "-o", str(blocker), "--size-potsdam", "32",
                             "--size-vaihingen", "32", "--tiles-potsdam", "1",
                             "--tiles-vaihingen", "1"],
        "synthesize-streetview": ["synthesize-streetview", "-o", str(blocker)],
        "prepare-isprs": ["prepare-isprs", "--potsdam", str(tmp_path), "-o", str(blocker)],
        "qgis-plugin zip": ["qgis-plugin", "zip", "-o", str(blocker / "p.zip")],
        "demo": ["demo", "--quick", "-o", str(blocker / "demo")],
    }


COMMANDS = ["predict", "predict-below", "evaluate", "export-onnx", "train", "synthesize-isprs",
            "synthesize-streetview", "prepare-isprs", "qgis-plugin zip", "demo"]


@pytest.mark.parametrize("command", COMMANDS)
def test_output_path_blocked_by_a_file_is_one_sentence(tmp_path, ckpt, capsys, toy_kind,
                                                       command):
    blocker = tmp_path / "blocker"
    blocker.write_text("precious")
    argv = _commands(tmp_path, ckpt, blocker)[command]
    assert main(argv) in (1, 2)
    err = capsys.readouterr().err
    assert "Traceback" not in err and "Error" in err, err
    assert blocker.read_text() == "precious"


@pytest.mark.parametrize("command", COMMANDS)
def test_read_only_output_is_refused_before_work(tmp_path, ckpt, capsys, toy_kind, monkeypatch,
                                                 command):
    """A read-only location (simulated: this suite may run as root) fails up front."""
    import tempfile

    import semimtl_geo.outputs as outputs

    out = tmp_path / "ro"
    out.mkdir()
    argv = _commands(tmp_path, ckpt, out)[command]
    real = tempfile.mkstemp

    def read_only(*args, dir=None, **kwargs):  # noqa: A002 - mkstemp's own name
        if dir is not None and Path(dir).resolve() == out.resolve():
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dir))
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(outputs.tempfile, "mkstemp", read_only)
    assert main(argv) == 1
    err = capsys.readouterr().err
    _one_sentence(err, "is not writable", "Read-only file system")
    assert list(out.iterdir()) == []


def test_check_output_helpers(tmp_path):
    assert check_output_dir(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    assert not (tmp_path / "a").exists()  # checking creates nothing
    (tmp_path / "f").write_text("x")
    with pytest.raises(UserError, match="is a file"):
        check_output_dir(tmp_path / "f")
    with pytest.raises(UserError, match="because .* is a file"):
        check_output_dir(tmp_path / "f" / "sub")
    with pytest.raises(UserError, match="is a folder"):
        check_output_file(tmp_path)
    assert list(tmp_path.iterdir()) == [tmp_path / "f"]


def test_evaluate_checks_the_report_path_before_evaluating(tmp_path, ckpt, capsys,
                                                           monkeypatch):
    import semimtl_geo.training.evaluate as evaluate

    def never(*args, **kwargs):
        raise AssertionError("the evaluation ran before the report path was checked")

    monkeypatch.setattr(evaluate, "evaluate_checkpoints", never)
    (tmp_path / "file").write_text("x")
    assert main(["evaluate", "-c", str(ckpt), "-o", str(tmp_path / "file" / "report")]) == 1
    _one_sentence(capsys.readouterr().err, "Report file")


def test_disk_full_while_writing_is_one_sentence(tmp_path, monkeypatch, capsys):
    import semimtl_geo.cli.cmd_qgis as cmd_qgis
    from semimtl_geo.atomic import atomic_write_text

    out = tmp_path / "p.zip"

    def full(path, cli=None):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(cmd_qgis, "zip_plugin", full)
    assert main(["qgis-plugin", "zip", "-o", str(out)]) == 1
    _one_sentence(capsys.readouterr().err, "No space left on device", "free disk space")

    # the atomic writer names the file and leaves nothing behind
    def no_space(self, text, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_text", no_space)
    with pytest.raises(UserError, match="Could not write .*report.md.*No space left"):
        atomic_write_text(tmp_path / "report.md", "x")
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_synthesize_never_replaces_real_downloads(tmp_path, capsys):
    real = tmp_path / "raw" / "potsdam" / "3_Ortho_IRRG.zip"
    real.parent.mkdir(parents=True)
    real.write_bytes(b"a real 20 GB download")
    argv = ["synthesize-isprs", "-o", str(tmp_path / "raw"), "--size-potsdam", "32",
            "--size-vaihingen", "32", "--tiles-potsdam", "1", "--tiles-vaihingen", "1"]
    assert main(argv) == 1
    _one_sentence(capsys.readouterr().err, "3_Ortho_IRRG.zip", "--overwrite")
    assert real.read_bytes() == b"a real 20 GB download"
    assert not (tmp_path / "raw" / "vaihingen").exists()  # nothing written at all
    assert main([*argv, "--overwrite"]) == 0
    assert real.read_bytes() != b"a real 20 GB download"


def test_demo_overwrite_deletes_only_demo_files(tmp_path):
    from semimtl_geo.cli.cmd_demo import DEMO_ENTRIES, clear_demo

    for name in DEMO_ENTRIES[:3]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "x").write_text("x")
    (tmp_path / "timings.json").write_text("{}")
    (tmp_path / "thesis.tex").write_text("mine")
    clear_demo(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["thesis.tex"]


def test_only_rank_zero_refuses_an_existing_run(tmp_path, monkeypatch, toy_kind):
    """Under torchrun the other ranks start while rank zero writes the new run: they must
    not refuse it (the multi-node test hung on exactly this race)."""
    from semimtl_geo.training import engine
    from semimtl_geo.training.config import load_config

    cfg = load_config(_toy_yaml(tmp_path, max_steps=1, preview_every=1))
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("written by rank zero\n")
    monkeypatch.setattr(engine, "_train_into", lambda cfg, run_dir, resume, callbacks: "trained")
    for key in ("RANK", "LOCAL_RANK", "NODE_RANK"):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(UserError, match="already holds a training run"):
        engine.train(cfg, run)
    monkeypatch.setenv("RANK", "1")
    assert engine.train(cfg, run) == "trained"


def test_other_ranks_write_nothing_before_rank_zero_judges_the_run(tmp_path, monkeypatch, toy_kind):
    """A rank other than zero that starts first must not write the run's config.yaml: rank
    zero, arriving later, refused the run as "already holds a training run" (the multi-node
    test failed on this race when node 1 started first)."""
    from semimtl_geo.training import engine
    from semimtl_geo.training.config import load_config

    cfg = load_config(_toy_yaml(tmp_path, max_steps=1, preview_every=1))
    run = tmp_path / "run"

    class Stop(Exception):
        pass

    def stop(*args, **kwargs):
        raise Stop

    monkeypatch.setattr(engine.pl, "Trainer", stop)
    for key in ("LOCAL_RANK", "NODE_RANK"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(Stop):
        engine.train(cfg, run)
    assert engine.existing_run_entries(run) == []
    monkeypatch.delenv("RANK")
    with pytest.raises(Stop):
        engine.train(cfg, run)  # rank zero judges the folder empty and starts
