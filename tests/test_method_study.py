"""benchmarks/method_study.py --quick: every seed's runs are aggregated into mean ± std,
SemiMTL is paired with JTL seed by seed, and the adversarial diagnostics are reported."""

import importlib.util
import json
import math
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "method_study.py"


def _load():
    spec = importlib.util.spec_from_file_location("method_study", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_mean_std_and_formatting():
    study = _load()
    mean, std, n = study.mean_std([1.0, 2.0, float("nan"), 3.0])
    assert (mean, n) == (2.0, 3) and std == pytest.approx(1.0)  # sample std, NaN dropped
    assert math.isnan(study.mean_std([4.0])[1]) and study.fmt(study.mean_std([4.0]), 1) == "4.0"
    assert study.fmt((2.0, 0.5, 2), 2) == "2.00 ± 0.50" and study.fmt((0, 0, 0), 1) == ""


def test_quick_study_aggregates_seeds_pairs_semimtl_with_jtl_and_reports_diagnostics(tmp_path):
    study = _load()
    out = tmp_path / "study"
    study.main(["-o", str(out), "--quick", "--jobs", "1", "--seeds", "0", "1",
                "--methods", "stl_seg", "stl_height", "jtl", "semimtl_m2"])
    report = json.loads((out / "report.json").read_text())
    assert report["study"]["seeds"] == [0, 1] and report["study"]["profile"]["steps"] == 2
    methods = report["methods"]
    assert list(methods) == ["stl_seg", "stl_height", "jtl", "semimtl_m2"]
    jtl, semimtl = methods["jtl"], methods["semimtl_m2"]
    for entry in (jtl, semimtl):
        assert entry["seeds"] == [0, 1]
        for key in ("potsdam/seg/mIoU", "vaihingen/seg/mIoU", "potsdam/height/RMSE",
                    "vaihingen/height/RMSE", "potsdam/height/r"):
            values, (mean, std, n) = entry["metrics"][key]["per_seed"], entry["metrics"][key][
                "mean_std"]
            assert len(values) == 2 and n == 2, key
            assert mean == pytest.approx(sum(values) / 2) and std is not None, key
    # the paired differences are SemiMTL minus JTL of the same seed
    pair = report["paired"]["semimtl_m2/vaihingen/seg/mIoU"]
    expected = [a - b for a, b in zip(semimtl["metrics"]["vaihingen/seg/mIoU"]["per_seed"],
                                      jtl["metrics"]["vaihingen/seg/mIoU"]["per_seed"])]
    assert pair["per_seed"] == pytest.approx(expected) and pair["seeds"] == 2
    assert pair["mean_std"][0] == pytest.approx(sum(expected) / 2)
    assert set(report["paired"]) == {"semimtl_m2/vaihingen/seg/mIoU",
                                     "semimtl_m2/potsdam/height/RMSE",
                                     "semimtl_m2/potsdam/height/r"}
    # adversarial diagnostics over seeds: encoder gradient norms and D accuracies
    terms = semimtl["terms"]
    assert any(k.startswith("grad_norm/") and k.endswith("/intra") for k in terms)
    assert any(k.startswith("D_acc/") and k.endswith("acc_domain") for k in terms)
    assert not any(k.startswith("D_acc/") for k in jtl["terms"])
    # ΔM of the STL rows against themselves is 0
    assert methods["stl_seg"]["metrics"]["potsdam/delta_m"]["mean_std"][0] == pytest.approx(0)
    md = (out / "report.md").read_text()
    assert "paired by seed" in md and "acc_domain" in md and " ± " in md
    # the Markdown can be rewritten from the JSON alone (NaN stored as null)
    study.main(["-o", str(out), "--markdown-only"])
    assert (out / "report.md").read_text() == md
    table = md.split("## Per-class IoU")[0]
    assert table.count("| SemiMTL (M2) |") == 1 and table.count("| JTL |") == 1
