import json
import math
import shutil

import pytest
import rasterio
import yaml

from semimtl_geo.cli import cmd_demo
from semimtl_geo.cli.main import main
from semimtl_geo.errors import UserError


def test_demo_pipeline_runs_end_to_end_at_tiny_size(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(cmd_demo, "_usable_cpus", lambda: 2)  # the side-by-side trainings
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Demo finished." in printed
    assert "in the background, side by side with semimtl (1 CPU thread(s) each)" in printed
    assert "Finished:" in (out / "train_jtl.log").read_text()  # JTL's own output
    timings = json.loads((out / "timings.json").read_text())
    assert 0 < timings["train jtl"] and 0 < timings["train semimtl"]
    # the class-balanced cross-entropy: one weight per class, rare classes weigh more
    weights = yaml.safe_load((out / "demo.yaml").read_text())["loss"]["seg_class_weights"]
    assert len(weights) == 6 and all(w > 0 for w in weights)
    for rel in [
        "prepared/manifest.json",
        "runs/semimtl/model.pt",
        "runs/jtl/model.pt",
        "report.md",
        "report.json",
        "panel_potsdam.png",
        "panel_vaihingen.png",
    ]:
        assert (out / rel).is_file(), rel
    report = json.loads((out / "report.json").read_text())
    _check_report(report, (out / "report.md").read_text())
    # the headline figures, Pearson r of the unlabelled Potsdam height included
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary) == ["SemiMTL (M2)", "JTL"]
    for method, figures in summary.items():
        row = next(r for r in report["rows"] if r["method"] == method)
        assert figures["Potsdam mIoU"] == row["datasets"]["potsdam"]["seg"]["mIoU"]
        assert figures["Potsdam building IoU"] == row["datasets"]["potsdam"]["seg"]["IoU"][1]
        assert figures["Vaihingen height RMSE (m)"] == row["datasets"]["vaihingen"]["height"][
            "RMSE"]
        r = row["datasets"]["potsdam"]["height"]["r"]
        assert figures["Potsdam height r"] == r and (r is None or -1 <= r <= 1)
    assert "Potsdam height r [unlabelled]" in printed
    classes = sorted((out / "predict").glob("*_class.tif"))
    assert len(classes) == 1 and classes[0].with_suffix(".qml").is_file()
    src_path = sorted((out / "prepared").rglob("image/*.tif"))
    held_out = [p for p in src_path if p.stem == classes[0].stem.removesuffix("_class")][0]
    with rasterio.open(held_out) as src, rasterio.open(classes[0]) as dst:
        assert dst.crs == src.crs and dst.transform == src.transform
        assert (dst.width, dst.height) == (src.width, src.height)
    # a second run refuses to overwrite the folder without --overwrite
    assert main(["demo", "--quick", "-o", str(out)]) == 1
    assert "--overwrite" in capsys.readouterr().err
    # a failing background JTL training ends the step with its message and log
    runs = tmp_path / "runs2"
    shutil.copytree(out / "runs" / "jtl", runs / "jtl")  # JTL refuses a folder with a run
    log = tmp_path / "jtl.log"
    with pytest.raises(UserError, match=r"Train jtl' failed \(exit 1\).*already holds"):
        cmd_demo._train_side_by_side(out / "demo.yaml", runs, log, 1, 2)
    assert (runs / "semimtl" / "model.pt").is_file()  # SemiMTL trained meanwhile


def test_demo_trains_one_after_the_other_on_one_core(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(cmd_demo, "_usable_cpus", lambda: 1)
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "side by side" not in printed and "[4/7] Train jtl" in printed
    assert not (out / "train_jtl.log").exists()
    assert (out / "runs" / "jtl" / "model.pt").is_file()


def _check_report(report: dict, markdown: str) -> None:
    """Table 2 rows: both methods on both datasets, every metric finite and in range."""
    assert report["table"] == "Table 2" and report["height_unit"] == "m"
    assert report["datasets"] == ["potsdam", "vaihingen"]
    assert [row["method"] for row in report["rows"]] == ["SemiMTL (M2)", "JTL"]
    for row in report["rows"]:
        assert row["tasks"] == ["seg", "height"]
        assert set(row["datasets"]) == {"potsdam", "vaihingen"}
        for name, res in row["datasets"].items():
            seg, height = res["seg"], res["height"]
            assert res["samples"] >= 1, name
            for key in ("pAcc", "mIoU", "mF1"):
                assert math.isfinite(seg[key]) and 0 <= seg[key] <= 100, (name, key)
            assert seg["pixels"] > 0 and len(seg["IoU"]) == 6
            assert math.isfinite(height["RMSE"]) and height["RMSE"] >= 0, name
            assert math.isfinite(height["AbsRel"]) and height["AbsRel"] >= 0, name
            for key in ("delta1", "delta2", "delta3"):
                assert math.isfinite(height[key]) and 0 <= height[key] <= 100, (name, key)
            assert height["delta1"] <= height["delta2"] <= height["delta3"]
            assert height["pixels"] > 0 and height["pixels_positive"] > 0
    main_tables, _, robust = markdown.partition("robust height metrics")
    for method in ("SemiMTL (M2)", "JTL"):
        assert main_tables.count(f"| {method} |") == 2  # one row per dataset block
        assert f"| {method} |" in robust  # and a robust height row
