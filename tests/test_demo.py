import json

import rasterio

from semimtl_geo.cli.main import main


def test_demo_pipeline_runs_end_to_end_at_tiny_size(tmp_path, capsys) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Demo finished." in printed
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
    assert report  # the Table 2 report has content for both checkpoints
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
