"""The street-view settings end to end: dataset kinds, a SemiMTL step, Table 1/3 reports."""

import csv
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch import LightningDataModule

from semimtl_geo.checkpoint import load_model_checkpoint
from semimtl_geo.classes import CITYSCAPES_CLASSES
from semimtl_geo.data.datamodule import TrainLoaderRequest, datamodule
from semimtl_geo.data.streetview.fixtures import write_streetview_fixtures
from semimtl_geo.errors import UserError
from semimtl_geo.training.config import DatasetConfig, load_config
from semimtl_geo.training.engine import train
from semimtl_geo.training.evaluate import evaluate_checkpoints, report_markdown

REPO = Path(__file__).resolve().parents[1]
SIZE = [32, 64]
SETTINGS = {
    "cross_city": ("cityscapes_cross_city.yaml", "cityscapes"),
    "cross_domain": ("cityscapes_synscapes.yaml", "synscapes"),
}


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_streetview_fixtures(tmp_path_factory.mktemp("sv"), size=tuple(SIZE))


def tiny_config(setting: str, roots: dict[str, Path], *extra: str):
    name, second = SETTINGS[setting]
    return load_config(REPO / "configs" / name, [
        f"data.datasets.0.root={roots['cityscapes']}",
        f"data.datasets.1.root={roots[second]}",
        f"data.datasets.0.options.size={SIZE}",
        f"data.datasets.1.options.size={SIZE}",
        "model.encoder=resnet18", "model.encoder_weights=null", "model.output_stride=16",
        "data.crop_size=32", "data.batch_size=2", "data.num_workers=0",
        "trainer.max_steps=1", "trainer.steps_per_epoch=1", "trainer.progress_bar=false",
        "trainer.preview_every=0", "trainer.log_every=1", "eval.patch_size=32",
        *extra,
    ])


@pytest.fixture(scope="module")
def runs(roots: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = {}
    for setting in SETTINGS:
        run_dir = tmp_path_factory.mktemp(setting)
        torch.manual_seed(0)
        result = train(tiny_config(setting, roots), run_dir)
        out[setting] = Path(result.model_path)
    return out


def _metrics(run_model: Path) -> dict[str, float]:
    rows = list(csv.DictReader(next(run_model.parent.rglob("metrics.csv")).open()))
    return {k: float(v) for row in rows for k, v in row.items() if v not in ("", None)}


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_semimtl_step_on_each_setting(setting: str, runs: dict[str, Path]) -> None:
    loaded = load_model_checkpoint(runs[setting])
    assert loaded.meta.classes == CITYSCAPES_CLASSES
    assert loaded.meta.bands == ["R", "G", "B"] and loaded.meta.height_scale == 10.0
    assert loaded.meta.height_unit == "m" and loaded.config["method"] == "semimtl"
    assert set(loaded.model.tasks) == {"seg", "height"}
    logged = _metrics(runs[setting])
    depth_name = "cityscapes_depth" if setting == "cross_city" else "synscapes"
    # Algorithm 1: seg supervised on Cityscapes, depth supervised on the other dataset,
    # inter-domain terms for each dataset's unlabelled task, and a D step.
    for key in ("train/cityscapes/seg/sup", f"train/{depth_name}/height/sup",
                "train/cityscapes/height/inter", f"train/{depth_name}/seg/inter",
                "train/loss_g", "train/loss_d"):
        assert key in logged and math.isfinite(logged[key]), key
    assert logged[f"train/{depth_name}/height/sup"] > 0


def test_kind_loaders_follow_the_contract(roots: dict[str, Path]) -> None:
    spec = DatasetConfig("cs", "cityscapes_extra", str(roots["cityscapes"]), ["height"],
                         {"size": SIZE})
    req = TrainLoaderRequest(("height",), 16, 3, 2, 0, 5, [0.5] * 3, [0.25] * 3)
    kind = datamodule(spec)
    assert isinstance(kind, LightningDataModule)
    first, again = list(kind.train_loader(req)), list(datamodule(spec, req).train_dataloader())
    assert len(first) == 2 and set(first[0]) == {"image", "height"}
    assert first[0]["image"].shape == (3, 3, 16, 16) and first[0]["height"].shape == (3, 16, 16)
    for a, b in zip(first, again):  # a deterministic function of the seed
        assert torch.equal(a["image"], b["image"])
    other = list(kind.train_loader(TrainLoaderRequest(("height",), 16, 3, 2, 0, 6,
                                                      [0.5] * 3, [0.25] * 3)))
    assert not torch.equal(first[0]["image"], other[0]["image"])
    with pytest.raises(UserError, match="has no \\['seg'\\] labels"):
        kind.train_loader(TrainLoaderRequest(("seg",), 16, 1, 1, 0, 0, [0.5] * 3, [0.25] * 3))
    info = datamodule(
        DatasetConfig("s", "synscapes", str(roots["synscapes"]), ["height"])).describe()
    assert info.height_unit == "m" and info.classes == CITYSCAPES_CLASSES
    with pytest.raises(UserError, match="inverse_depth .* not supported"):
        datamodule(
            DatasetConfig("s", "synscapes", "x", ["height"], {"depth_target": "inverse_depth"})
        ).describe()
    with pytest.raises(UserError, match="Unknown option"):
        datamodule(DatasetConfig("c", "cityscapes", "x", [], {"crop": 1})).describe()
    samples = list(datamodule(
        DatasetConfig("c", "cityscapes", str(roots["cityscapes"]), ["seg"], {"size": SIZE})
    ).eval_samples("val"))
    assert len(samples) == 2
    image, mask, height, frame_id = samples[0]
    assert image.dtype == np.uint8 and image.shape == (3, *SIZE)
    assert mask.dtype == np.uint8 and height.dtype == np.float32 and frame_id.startswith("frankf")
    assert np.nanmax(height) > 5  # metres, not normalised units


class KnownPredictions:
    """Predict the ground truth exactly for seg and ``factor x`` the reference depth."""

    def __init__(self, roots: dict[str, Path], factors: dict[str, float]) -> None:
        self.factors = factors
        self.truth = {}
        for kind, root in (("cityscapes", roots["cityscapes"]), ("synscapes", roots["synscapes"])):
            spec = DatasetConfig(kind, kind, str(root), [], {"size": SIZE})
            for s in datamodule(spec).eval_samples("val"):
                self.truth[s.image.tobytes()] = s
        self.references = list(self.truth.values())

    def __call__(self, loaded, image, tasks):
        truth = self.truth[image.tobytes()]
        factor = self.factors[Path(loaded.path).name]
        out = {}
        if "seg" in tasks:
            out["class"] = truth.mask.copy()  # ignored pixels are skipped by the metric
            out["class"][out["class"] == 255] = 0
        if "height" in tasks:
            out["height"] = np.nan_to_num(truth.height, nan=1.0) * factor
        return out


def test_table_layouts_on_known_predictions(runs: dict[str, Path], roots, tmp_path) -> None:
    for setting, table, blocks in (("cross_city", "Table 1", ["cityscapes"]),
                                   ("cross_domain", "Table 3", ["cityscapes", "synscapes"])):
        model = load_model_checkpoint(runs[setting])
        base_path = tmp_path / f"{setting}_stl.pt"
        shutil.copy(runs[setting], base_path)
        baseline = load_model_checkpoint(base_path)
        predict = KnownPredictions(roots, {"model.pt": 1.1, base_path.name: 1.5})
        report = evaluate_checkpoints([model], predict, baseline_seg=model,
                                      baseline_height=baseline, split="val", progress=False)
        assert report["table"] == table and report["quantity"] == "depth"
        assert report["datasets"] == blocks and report["height_unit"] == "m"
        row = next(r for r in report["rows"] if r["checkpoint"].endswith("model.pt"))
        for name in blocks:
            res = row["datasets"][name]
            refs = [s for s in predict.references
                    if (s.id.isdigit()) == (name == "synscapes")]
            y = np.concatenate([s.height[np.isfinite(s.height)] for s in refs])
            assert res["seg"]["pAcc"] == pytest.approx(100.0)
            assert res["seg"]["mIoU"] == pytest.approx(100.0)
            h = res["height"]
            assert h["AbsRel"] == pytest.approx(0.1, rel=1e-5)
            assert h["RMSE"] == pytest.approx(0.1 * np.sqrt(np.mean(y.astype(np.float64) ** 2)),
                                              rel=1e-5)
            assert h["delta1"] == pytest.approx(100.0)  # 1.1 < 1.25
            assert h["pixels"] == y.size
            # ΔM (eq. 10): mIoU equal, RMSE 0.1 vs 0.5 of the rms depth -> (0 + 0.8) / 2
            assert res["delta_m"] == pytest.approx(40.0, abs=1e-3)
        md = report_markdown(report)
        assert f"# Evaluation (paper {table} layout)" in md
        assert "Depths and depth errors in **m**" in md and "RMSE (m)" in md
        assert [line[3:] for line in md.splitlines() if line.startswith("## ")] == blocks
        assert "| SemiMTL (M2) | 100.0 | 100.0 | 0.100 |" in md
        if setting == "cross_city":
            assert any("cityscapes_depth" in n and "left out" in n for n in report["notes"])


def test_evaluate_cli_on_the_cross_domain_run(runs: dict[str, Path], tmp_path: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    from semimtl_geo.cli.main import main

    out = tmp_path / "table3"
    assert main(["evaluate", "-c", str(runs["cross_domain"]), "--split", "val",
                 "-o", str(out)]) == 0
    md = out.with_name("table3.md").read_text()
    assert "paper Table 3 layout" in md and "## synscapes" in md and "## cityscapes" in md
    assert "Depths and depth errors in **m**" in md
    capsys.readouterr()
    assert main(["evaluate", "-c", str(runs["cross_domain"]), "--split", "test",
                 "-o", str(out)]) == 1
    assert "test labels are not public" in capsys.readouterr().err


def test_train_cli_names_a_missing_folder(roots: dict[str, Path], tmp_path: Path,
                                          capsys: pytest.CaptureFixture) -> None:
    from semimtl_geo.cli.main import main

    broken = tmp_path / "cityscapes"
    shutil.copytree(roots["cityscapes"], broken)
    shutil.rmtree(broken / "disparity" / "train_extra")
    code = main(["train", "-c", str(REPO / "configs" / "cityscapes_cross_city.yaml"),
                 "-o", str(tmp_path / "run"), f"data.datasets.0.root={broken}",
                 f"data.datasets.1.root={broken}", "model.encoder=resnet18",
                 "model.encoder_weights=null"])
    assert code == 1
    err = capsys.readouterr().err
    assert f"{broken / 'disparity' / 'train_extra'} is missing" in err
    assert "disparity_trainextra.zip" in err and "Traceback" not in err
