"""The QML sidecars load in a real QGIS (skipped where QGIS is not installed)."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from _predict_helpers import textured, tiny_checkpoint, write_raster

from semimtl_geo.classes import ISPRS_CLASSES
from semimtl_geo.cli.main import main

pytestmark = pytest.mark.qgis

QGIS_PYTHON = "/usr/bin/python3"

# Opens each raster the way a drag-and-drop does (default style = the .qml sidecar).
PROBE = """
import json, sys
from qgis.core import QgsApplication, QgsRasterLayer
app = QgsApplication([], False)
app.initQgis()
out = {}
for path in sys.argv[1:]:
    layer = QgsRasterLayer(path, "layer")
    r = layer.renderer()
    info = {"valid": layer.isValid(), "type": r.type()}
    if r.type() == "paletted":
        info["classes"] = [[int(c.value), c.label, c.color.name()] for c in r.classes()]
    elif r.type() == "singlebandpseudocolor":
        items = r.shader().rasterShaderFunction().colorRampItemList()
        info["labels"] = [i.label for i in items]
    out[path] = info
print("JSON" + json.dumps(out))
app.exitQgis()
"""


def _has_qgis() -> bool:
    if not Path(QGIS_PYTHON).exists():
        return False
    probe = subprocess.run([QGIS_PYTHON, "-c", "import qgis.core"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not _has_qgis(), reason="QGIS (python3-qgis) is not installed")
def test_qgis_applies_sidecar_styles_on_load(tmp_path):
    ckpt = tiny_checkpoint(tmp_path / "tiny.ckpt")
    src = write_raster(tmp_path / "q.tif", textured(64, 64))
    out = tmp_path / "out"
    assert main(["predict", str(src), "-o", str(out), "--checkpoint", str(ckpt),
                 "--device", "cpu", "--no-preview"]) == 0
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "HOME": str(tmp_path)}
    paths = [str(out / "q_class.tif"), str(out / "q_height.tif")]
    proc = subprocess.run([QGIS_PYTHON, "-c", PROBE, *paths], capture_output=True, text=True,
                          env=env, timeout=120)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("JSON")]
    assert line, proc.stderr[-1000:]
    info = json.loads(line[0][4:])
    cls, hgt = info[paths[0]], info[paths[1]]
    assert cls["valid"] and cls["type"] == "paletted"
    expected = [[i, n, "#{:02x}{:02x}{:02x}".format(*c)]
                for i, (n, c) in enumerate(zip(ISPRS_CLASSES.names, ISPRS_CLASSES.colors))]
    assert cls["classes"] == expected
    assert hgt["valid"] and hgt["type"] == "singlebandpseudocolor"
    assert all(label.endswith(" m") for label in hgt["labels"])
    # control: without the sidecar QGIS would show the height raster in grey
    shutil.copy(out / "q_height.tif", tmp_path / "bare.tif")
    proc = subprocess.run([QGIS_PYTHON, "-c", PROBE, str(tmp_path / "bare.tif")],
                          capture_output=True, text=True, env=env, timeout=120)
    bare = json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith("JSON")][0][4:])
    assert bare[str(tmp_path / "bare.tif")]["type"] == "singlebandgray"
