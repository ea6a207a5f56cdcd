"""Evaluation on a known prediction gives known numbers (Table 2 layout, ΔM of eq. 10)."""

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from semimtl_geo.checkpoint import LoadedModel, ModelMeta
from semimtl_geo.data.datamodule import (
    DataModule,
    EvalSample,
    KindInfo,
    register_datamodule,
    unregister_kind,
)
from semimtl_geo.training.evaluate import evaluate_checkpoints, report_markdown, write_report

MASK = np.array([[0, 0, 1, 1], [2, 2, 255, 1]], dtype=np.uint8)
HEIGHT = np.array([[0, 1, 2, 4], [np.nan, 2, 2, 8]], dtype=np.float32)  # metres
PRED_CLASS = np.array([[0, 1, 1, 1], [2, 0, 3, 1]], dtype=np.uint8)


@pytest.fixture(autouse=True)
def known_kind():
    class Known(DataModule):
        kinds = ("known",)

        def describe(self):
            return KindInfo(None, [], [], [], None)

        def train_loader(self, request):
            raise AssertionError("evaluation never asks for training batches")

        def eval_samples(self, split):
            assert split == "test"
            yield EvalSample(np.zeros((3, 2, 4), np.uint8), MASK, HEIGHT, "tile")
            yield EvalSample(np.zeros((3, 2, 4), np.uint8), None, None, "unlabelled")  # skipped

    register_datamodule(Known, overwrite=True)
    yield
    unregister_kind("known")


def loaded(name, method, tasks):
    config = {
        "method": method,
        "mode": "m2",
        "data": {"datasets": [{"name": "k", "kind": "known", "root": "", "tasks": ["seg"]}]},
    }
    return LoadedModel(
        SimpleNamespace(tasks=tasks), ModelMeta(), config, Path(f"/nowhere/{name}.pt")
    )


def fake_predict(model, image, tasks):
    name = model.path.stem
    out = {}
    if "seg" in tasks:
        out["class"] = (
            PRED_CLASS if name == "mtl" else np.where(MASK == 255, 0, MASK).astype(np.uint8)
        )
    if "height" in tasks:
        out["height"] = np.nan_to_num(HEIGHT, nan=4.0) + (1.0 if name == "mtl" else 2.0)
    return out


def test_known_prediction_gives_known_numbers(tmp_path):
    mtl = loaded("mtl", "semimtl", ("seg", "height"))
    seg = loaded("seg", "stl_seg", ("seg",))
    height = loaded("height", "stl_height", ("height",))
    report = evaluate_checkpoints([mtl], fake_predict, seg, height, progress=False)
    rows = {r["method"]: r["datasets"]["k"] for r in report["rows"]}
    assert list(rows) == ["STL Seg", "STL Depth", "SemiMTL (M2)"]
    m = rows["SemiMTL (M2)"]
    assert m["samples"] == 2
    # confusion over the 7 labelled pixels: 5 correct; IoU = 1/3, 3/4, 1/2 (classes 0-2)
    assert m["seg"]["pAcc"] == pytest.approx(100 * 5 / 7)
    assert m["seg"]["mIoU"] == pytest.approx(100 * (1 / 3 + 3 / 4 + 1 / 2) / 3)
    assert m["seg"]["IoU"][3] is None  # class 3 predicted only on the ignored pixel
    # height error is +1 m on the 7 finite pixels; AbsRel/δ use the 6 pixels with y > 0
    assert m["height"]["RMSE"] == pytest.approx(1.0)
    assert m["height"]["AbsRel"] == pytest.approx((1 + 0.5 + 0.25 + 0.5 + 0.5 + 0.125) / 6)
    assert m["height"]["delta1"] == pytest.approx(100 / 6)
    assert m["height"]["delta2"] == pytest.approx(500 / 6)
    assert m["height"]["delta3"] == pytest.approx(500 / 6)
    # ΔM (eq. 10): mIoU 52.78 vs 100, RMSE 1 vs 2
    expected = 100 * ((m["seg"]["mIoU"] - 100) / 100 + (2 - 1) / 2) / 2
    assert m["delta_m"] == pytest.approx(expected) and m["delta_m"] == pytest.approx(
        1.3889, abs=1e-3
    )
    assert (
        rows["STL Seg"]["seg"]["mIoU"] == pytest.approx(100) and rows["STL Seg"]["height"] is None
    )
    assert (
        rows["STL Depth"]["height"]["RMSE"] == pytest.approx(2.0)
        and rows["STL Depth"]["seg"] is None
    )
    assert rows["STL Seg"]["delta_m"] == 0.0 and rows["STL Depth"]["delta_m"] == 0.0

    md_path, js_path = write_report(report, tmp_path / "table.md")
    assert md_path.name == "table.md" and js_path.name == "table.json"
    data = json.loads(js_path.read_text())
    assert data["height_unit"] == "m" and data["rows"][2]["datasets"]["k"][
        "delta_m"
    ] == pytest.approx(expected)
    md = md_path.read_text()
    assert "| SemiMTL (M2) | 71.4 | 52.8 | 0.479 | 1.000 | 16.7 | 83.3 | 83.3 | +1.4 |" in md
    assert "| STL Seg | 100.0 | 100.0 |  |  |  |  |  | +0.0 |" in md
    assert "RMSE (m)" in md and "Heights and height errors in **m**" in md


def test_without_baselines_delta_m_is_absent_and_said():
    mtl = loaded("mtl", "jtl", ("seg", "height"))
    report = evaluate_checkpoints([mtl], fake_predict, progress=False)
    assert report["rows"][0]["datasets"]["k"]["delta_m"] is None
    assert any("ΔM not computed" in n for n in report["notes"])
    assert "| JTL |" in report_markdown(report)


def test_nan_metrics_become_null_in_json(tmp_path):
    # a model whose predictions are NaN everywhere: RMSE has no valid pixel -> null
    def nan_predict(model, image, tasks):
        return {"height": np.full(HEIGHT.shape, np.nan, np.float32)}

    report = evaluate_checkpoints(
        [loaded("h", "stl_height", ("height",))], nan_predict, progress=False
    )
    h = report["rows"][0]["datasets"]["k"]["height"]
    assert h["RMSE"] is None and h["pixels"] == 0
    _, js = write_report(report, tmp_path / "r")
    assert json.loads(js.read_text())["rows"][0]["datasets"]["k"]["height"]["RMSE"] is None
    assert not math.isnan(report["rows"][0]["datasets"]["k"]["samples"])
