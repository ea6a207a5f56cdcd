"""The QGIS Processing plugin: its CLI runner (plain Python) and the plugin in a real QGIS.

Tests marked ``qgis`` need Debian's qgis/python3-qgis/qgis-providers packages
(``make test-qgis`` installs them) and skip without them. They drive
``/usr/bin/qgis_process.bin`` headless with a throw-away HOME (Debian's ``qgis_process``
wrapper passes an option the 3.22 binary rejects, see REFERENCE section 9) and QGIS's own
Python (/usr/bin/python3, no torch) through ``tests/qgis_driver.py``.
"""

import ast
import json
import os
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from semimtl_geo.cli.main import main
from semimtl_geo.qgis_plugin import runner

ROOT = Path(__file__).resolve().parents[1]
PLUGIN_SRC = ROOT / "semimtl_geo" / "qgis_plugin"
QGIS_PROCESS = Path("/usr/bin/qgis_process.bin")
QGIS_PYTHON = Path("/usr/bin/python3")
DRIVER = Path(__file__).with_name("qgis_driver.py")


def fake_cli(tmp_path: Path, body: str, name: str = "semimtl-geo") -> Path:
    """An executable Python script standing in for the semimtl-geo CLI."""
    path = tmp_path / name
    path.write_text(f"#!{sys.executable}\nimport sys, time\n" + textwrap.dedent(body))
    path.chmod(0o755)
    return path


# ---------------------------------------------------------------- runner (no QGIS needed)


def test_parse_progress_reads_tqdm_segments():
    assert runner.parse_progress("tile.tif:  45%|####5     | 9/20 [00:01<00:02, 4.5win/s]") == (
        "tile.tif", 45.0)
    assert runner.parse_progress("100%|##########| 4/4 [00:00<00:00, 9.1it/s]") == (None, 100.0)
    assert runner.parse_progress("tile.tif: 0win [00:00, ?win/s]") == ("tile.tif", None)
    assert runner.parse_progress("Error: something is wrong.") is None
    assert runner.split_glued("a.tif: 0win [00:00, ?win/s]Error: bad [x].") == [
        "a.tif: 0win [00:00, ?win/s]", "Error: bad [x]."]


def test_run_cli_streams_progress_and_returns_the_one_sentence_error(tmp_path):
    cli = fake_cli(tmp_path, """
        print("starting", flush=True)
        for i in (10, 50, 90):
            sys.stderr.write(f"\\rscene.tif:  {i}%|#   | {i}/100 [00:01<00:02, 4.5win/s]")
            sys.stderr.flush()
        sys.stderr.write("\\rscene.tif: 0win [00:00, ?win/s]")
        sys.stderr.write("Error: The raster has 4 bands; pass --bands.\\n")
        sys.stderr.write("1 input(s) failed; see the errors above.\\n")
        sys.exit(1)
    """)
    progress, log = [], []
    result = runner.run_cli([str(cli)], on_progress=progress.append, on_log=log.append)
    assert progress == [10.0, 50.0, 90.0]
    assert "starting" in log and "scene.tif" in log
    assert not any("%|" in line for line in log)
    assert result.returncode == 1 and not result.ok
    assert result.error == "The raster has 4 bands; pass --bands."


def test_run_cli_crash_reports_the_tail(tmp_path):
    cli = fake_cli(tmp_path, "raise RuntimeError('boom')\n")
    result = runner.run_cli([str(cli)])
    assert result.returncode != 0
    assert "RuntimeError: boom" in result.error


@pytest.mark.skipif(os.name != "posix", reason="process groups are POSIX")
def test_cancel_kills_the_process_group(tmp_path):
    pid_file = tmp_path / "child.pid"
    cli = fake_cli(tmp_path, f"""
        import subprocess
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        open({str(pid_file)!r}, "w").write(str(child.pid))
        for i in range(100):
            sys.stderr.write(f"\\rx:  {{i}}%|#   | {{i}}/100 [00:01<00:02, 4.5win/s]")
            sys.stderr.flush()
            time.sleep(0.2)
    """)
    progress = []
    start = time.monotonic()
    result = runner.run_cli(
        [str(cli)], on_progress=progress.append,
        is_canceled=lambda: bool(progress) and progress[-1] >= 2,
    )
    assert result.canceled and not result.ok and result.error is None
    assert time.monotonic() - start < 10
    child = int(pid_file.read_text())
    for _ in range(50):  # the grandchild got SIGTERM with the group
        if not _alive(child):
            break
        time.sleep(0.1)
    else:
        pytest.fail("the CLI's child process survived the cancel")


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting to be reaped counts as gone)."""
    if not Path("/proc").is_dir():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_find_cli_order_and_error(tmp_path, monkeypatch):
    a = fake_cli(tmp_path, "", "a-cli")
    b = fake_cli(tmp_path, "", "b-cli")
    c = fake_cli(tmp_path, "", "semimtl-geo")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv(runner.CLI_ENV_VAR, raising=False)
    monkeypatch.setattr(runner, "installed_cli", lambda plugin_dir=None: None)
    assert runner.find_cli(str(a), str(b)) == str(a)
    assert runner.find_cli(None, str(b)) == str(b)
    assert runner.find_cli(None, str(tmp_path)) == str(c)  # an environment's folder
    monkeypatch.setenv(runner.CLI_ENV_VAR, str(b))
    assert runner.find_cli() == str(b)
    monkeypatch.delenv(runner.CLI_ENV_VAR)
    assert runner.find_cli() == str(c)  # PATH
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    with pytest.raises(runner.CliNotFoundError, match="Processing > Options"):
        runner.find_cli(str(tmp_path / "missing"))


def test_find_cli_reads_the_former_env_var_with_a_deprecation_note(tmp_path, monkeypatch):
    """$SEMIMTL_GEO_CLI (the name before $SEMIMTL_GEO_EXECUTABLE) still works, with a note."""
    old, new = fake_cli(tmp_path, "", "old-cli"), fake_cli(tmp_path, "", "new-cli")
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    monkeypatch.setattr(runner, "installed_cli", lambda plugin_dir=None: None)
    monkeypatch.delenv(runner.CLI_ENV_VAR, raising=False)
    monkeypatch.setenv(runner.LEGACY_CLI_ENV_VAR, str(old))
    notes = []
    assert runner.find_cli(warn=notes.append) == str(old)
    assert notes == ["$SEMIMTL_GEO_CLI is deprecated and will stop being read; set "
                     "$SEMIMTL_GEO_EXECUTABLE to the same path instead."]
    with pytest.warns(FutureWarning, match="SEMIMTL_GEO_EXECUTABLE"):
        assert runner.find_cli() == str(old)
    notes.clear()
    assert runner.find_cli(str(new), warn=notes.append) == str(new) and notes == []
    monkeypatch.setenv(runner.CLI_ENV_VAR, str(new))  # the new name wins, silently
    assert runner.find_cli(warn=notes.append) == str(new) and notes == []
    monkeypatch.setenv(runner.CLI_ENV_VAR, str(tmp_path / "missing"))
    with pytest.raises(runner.CliNotFoundError, match=r"\$SEMIMTL_GEO_EXECUTABLE"):
        runner.find_cli(warn=notes.append)


class _FakeQgsSettings(dict):
    """The part of QgsSettings that the setting migration uses."""

    def value(self, key, default=None):
        return self.get(key, default)

    def setValue(self, key, value):  # noqa: N802 - QGIS API
        self[key] = value

    def remove(self, key):
        self.pop(key, None)


def test_the_former_processing_setting_moves_to_its_new_name():
    from semimtl_geo.qgis_plugin import settings

    old = "Processing/Configuration/SEMIMTL_GEO_CLI"
    new = "Processing/Configuration/SEMIMTL_GEO_EXECUTABLE"
    saved = _FakeQgsSettings({old: "/envs/a/bin/semimtl-geo"})
    settings.migrate_legacy_setting(saved)
    assert saved == {new: "/envs/a/bin/semimtl-geo"}
    both = _FakeQgsSettings({old: "/old", new: "/new"})  # a value set under the new name stays
    settings.migrate_legacy_setting(both)
    assert both == {new: "/new"}
    settings.migrate_legacy_setting(empty := _FakeQgsSettings())
    assert empty == {}


def test_clean_env_drops_qgis_python_and_proj_variables():
    env = runner.clean_env({"PYTHONPATH": "/usr/share/qgis/python", "PROJ_LIB": "/x", "HOME": "/h"})
    assert env == {"HOME": "/h", "PYTHONUNBUFFERED": "1", "TQDM_MININTERVAL": "0.5"}


def test_plugin_code_imports_no_torch_or_semimtl_geo():
    allowed = {"qgis", "processing"} | set(sys.stdlib_module_names)
    for path in PLUGIN_SRC.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                roots = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                roots = [node.module.split(".")[0]]
            else:
                continue
            assert set(roots) <= allowed, f"{path.name} imports {roots}"


def test_plugin_modules_import_each_other_without_cycles():
    """provider -> algorithms -> settings/runner: no module imports one that imports it."""
    graph = {}
    for path in PLUGIN_SRC.glob("*.py"):
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                deps.update([node.module] if node.module else [a.name for a in node.names])
        graph[path.stem] = deps

    def reaches(start, goal, seen=()):
        return any(d == goal or (d not in seen and reaches(d, goal, (*seen, d)))
                   for d in graph.get(start, ()))

    cycles = [m for m in graph if reaches(m, m)]
    assert not cycles, {m: graph[m] for m in cycles}
    assert "algorithms" in graph["provider"] and "provider" not in graph["algorithms"]


def test_install_and_zip_commands(tmp_path):
    profile = tmp_path / "profile"
    profile.mkdir()  # QGIS creates its profile folders; install refuses a missing one
    assert main(["qgis-plugin", "install", "--profile-dir", str(profile)]) == 0
    target = profile / "python" / "plugins" / "semimtl_geo_qgis"
    assert (target / "metadata.txt").is_file() and (target / "icon.svg").is_file()
    assert "hasProcessingProvider=yes" in (target / "metadata.txt").read_text()
    record = json.loads((target / runner.INSTALL_CONFIG).read_text())
    assert Path(record["cli"]).is_file() and os.access(record["cli"], os.X_OK)
    assert runner.installed_cli(target) == record["cli"]
    (target / "stale.py").write_text("")
    assert main(["qgis-plugin", "install", "--profile-dir", str(profile)]) == 0
    assert not (target / "stale.py").exists()  # replaced, not merged
    assert [p.name for p in target.parent.iterdir()] == ["semimtl_geo_qgis"]

    out = tmp_path / "semimtl_geo_qgis.zip"
    assert main(["qgis-plugin", "zip", "-o", str(out)]) == 0
    names = zipfile.ZipFile(out).namelist()
    assert "semimtl_geo_qgis/metadata.txt" in names and "semimtl_geo_qgis/__init__.py" in names
    assert all(n.startswith("semimtl_geo_qgis/") for n in names)
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)


# ---------------------------------------------------------------- real QGIS

needs_qgis = pytest.mark.skipif(
    not (QGIS_PROCESS.is_file() and QGIS_PYTHON.is_file()),
    reason="QGIS is not installed (make test-qgis installs qgis, python3-qgis, qgis-providers)",
)


@pytest.fixture(scope="module")
def qgis_env(tmp_path_factory):
    """A throw-away QGIS profile with the plugin installed and enabled."""
    home = tmp_path_factory.mktemp("qgis_home")
    profile = home / ".local" / "share" / "QGIS" / "QGIS3" / "profiles" / "default"
    profile.mkdir(parents=True)
    assert main(["qgis-plugin", "install", "--profile-dir", str(profile)]) == 0
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HOME=str(home), QT_QPA_PLATFORM="offscreen", XDG_RUNTIME_DIR=str(home))
    subprocess.run([str(QGIS_PROCESS), "plugins", "enable", "semimtl_geo_qgis"], env=env,
                   check=True, capture_output=True, timeout=120)
    return {"env": env, "plugins": profile / "python" / "plugins"}


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """A 3-band georeferenced raster and a tiny random checkpoint with its own classes."""
    import rasterio
    import torch
    from rasterio.transform import from_origin

    from semimtl_geo.checkpoint import ModelMeta, save_model_checkpoint
    from semimtl_geo.classes import ClassTable
    from semimtl_geo.models import MultiTaskNet

    tmp = tmp_path_factory.mktemp("scene")
    torch.manual_seed(0)
    model = MultiTaskNet("resnet18", 3, 3, ("seg", "height"), None, 8).eval()
    classes = ClassTable(("road", "roof", "park"), ((90, 90, 90), (200, 40, 40), (40, 160, 60)))
    ckpt = save_model_checkpoint(
        tmp / "tiny.ckpt", model,
        ModelMeta(classes=classes, bands=["R", "G", "B"], gsd=0.5, patch_size=64,
                  height_scale=20.0),
    )
    raster = tmp / "scene.tif"
    profile = dict(driver="GTiff", width=96, height=80, count=3, dtype="uint8", crs="EPSG:32633",
                   transform=from_origin(368000.0, 5808000.0, 0.5, 0.5))
    with rasterio.open(raster, "w", **profile) as ds:
        ds.write(np.random.default_rng(0).integers(0, 256, (3, 80, 96), dtype=np.uint8))
    four = tmp / "four_bands.tif"
    with rasterio.open(four, "w", **{**profile, "count": 4}, photometric="MINISBLACK") as ds:
        ds.write(np.zeros((4, 80, 96), np.uint8))
    wide = tmp / "sixteen_bit.tif"
    with rasterio.open(wide, "w", **{**profile, "dtype": "uint16"}) as ds:
        ds.write(np.random.default_rng(1).integers(0, 4096, (3, 80, 96), dtype=np.uint16))
    return {"ckpt": ckpt, "raster": raster, "four": four, "wide": wide, "classes": classes}


def qgis_process(qgis_env, *args, timeout=300):
    return subprocess.run([str(QGIS_PROCESS), *args], env=qgis_env["env"], capture_output=True,
                          text=True, timeout=timeout)


def qgis_python(qgis_env, *args):
    out = subprocess.run([str(QGIS_PYTHON), str(DRIVER), *args], env=qgis_env["env"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.qgis
@needs_qgis
def test_qgis_lists_the_algorithms(qgis_env):
    out = qgis_process(qgis_env, "list")
    assert out.returncode == 0, out.stderr
    assert "semimtl-geo:predict\tPredict class and height" in out.stdout
    helped = qgis_process(qgis_env, "help", "semimtl-geo:predict")
    for name in ("INPUT", "CHECKPOINT", "DEVICE", "BATCH_SIZE", "AOI", "VECTORIZE", "RESCALE",
                 "OUTPUT_CLASS", "OUTPUT_HEIGHT", "OUTPUT_VECTOR", "EXECUTABLE"):
        assert f"{name}:" in helped.stdout


@pytest.mark.qgis
@needs_qgis
def test_qgis_predict_writes_styled_outputs_on_the_input_grid(qgis_env, scene, tmp_path):
    import geopandas as gpd
    import rasterio

    out = tmp_path / "out"
    result = qgis_process(
        qgis_env, "run", "semimtl-geo:predict", "--",
        f"INPUT={scene['raster']}", f"CHECKPOINT={scene['ckpt']}", "DEVICE=cpu", "BATCH_SIZE=2",
        "VECTORIZE=1", f"OUTPUT_CLASS={out / 'classes.tif'}", f"OUTPUT_HEIGHT={out / 'height.tif'}",
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "semimtl-geo predict" in result.stdout  # the command is logged
    assert sorted(p.name for p in out.iterdir()) == [
        "classes.qml", "classes.tif", "classes_polygons.gpkg", "classes_polygons.qml",
        "height.qml", "height.tif"]
    with rasterio.open(scene["raster"]) as src:
        for name in ("classes.tif", "height.tif"):
            with rasterio.open(out / name) as ds:
                assert ds.crs == src.crs
                assert ds.transform == src.transform
                assert (ds.width, ds.height) == (src.width, src.height)
        with rasterio.open(out / "classes.tif") as ds:
            assert set(np.unique(ds.read(1))) <= {0, 1, 2}
    polygons = gpd.read_file(out / "classes_polygons.gpkg")
    assert len(polygons) > 0 and polygons.crs == "EPSG:32633"

    styled = qgis_python(qgis_env, "style", str(out / "classes.tif"))
    assert styled["valid"] and styled["type"] == "paletted" and styled["crs"] == "EPSG:32633"
    assert [c["label"] for c in styled["classes"]] == list(scene["classes"].names)
    assert [c["color"] for c in styled["classes"]] == ["#5a5a5a", "#c82828", "#28a03c"]
    vector = qgis_python(qgis_env, "style", str(out / "classes_polygons.gpkg"))
    assert vector["type"] == "categorizedSymbol" and vector["field"] == "class_id"
    assert [c["color"] for c in vector["classes"]] == [c["color"] for c in styled["classes"]]
    height = qgis_python(qgis_env, "style", str(out / "height.tif"))
    assert height["type"] == "singlebandpseudocolor" and len(height["ramp"]) >= 2

    # The docs screenshot script renders the styled layers with QGIS's map renderer.
    png = tmp_path / "shot.png"
    shot = subprocess.run(
        [str(QGIS_PYTHON), str(ROOT / "scripts" / "qgis_screenshot.py"), "--image",
         str(scene["raster"]), "--classes", str(out / "classes.tif"), "--height",
         str(out / "height.tif"), "-o", str(png)],
        env=qgis_env["env"], capture_output=True, text=True, timeout=120,
    )
    assert shot.returncode == 0, shot.stderr[-2000:]
    from PIL import Image

    pixels = {tuple(p[:3]) for p in Image.open(png).convert("RGB").getdata()}
    with rasterio.open(out / "classes.tif") as ds:
        predicted = {int(v) for v in np.unique(ds.read(1))}
    for value in predicted:  # every predicted class shows in its checkpoint colour
        assert scene["classes"].colors[value] in pixels


@pytest.mark.qgis
@needs_qgis
def test_qgis_prepare_isprs_on_synthetic_downloads(qgis_env, tmp_path):
    raw = tmp_path / "raw"
    assert main(["synthesize-isprs", "-o", str(raw), "--size-potsdam", "64", "--size-vaihingen",
                 "48", "--tiles-potsdam", "1", "--tiles-vaihingen", "1"]) == 0
    out = tmp_path / "prepared"
    result = qgis_process(
        qgis_env, "run", "semimtl-geo:prepare_isprs", "--", f"POTSDAM={raw / 'potsdam'}",
        f"VAIHINGEN={raw / 'vaihingen'}", f"OUTPUT={out}",
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["datasets"]) == {"potsdam", "vaihingen"}
    assert len(list(out.glob("*/image/*.tif"))) == 2


@pytest.mark.qgis
@needs_qgis
def test_qgis_results_load_into_the_project_styled(qgis_env, scene):
    """What the toolbox dialog does: run, then add the outputs to the project."""
    layers = qgis_python(
        qgis_env, "load", str(qgis_env["plugins"]), str(scene["raster"]), str(scene["ckpt"])
    )
    assert layers == {"Classes": "paletted", "Height (m)": "singlebandpseudocolor",
                      "Class polygons": "categorizedSymbol"}


@pytest.mark.qgis
@needs_qgis
def test_qgis_predict_failure_shows_the_cli_sentence(qgis_env, scene, tmp_path):
    out = tmp_path / "out"
    result = qgis_process(
        qgis_env, "run", "semimtl-geo:predict", "--",
        f"INPUT={scene['four']}", f"CHECKPOINT={scene['ckpt']}", "DEVICE=cpu",
        f"OUTPUT_CLASS={out / 'classes.tif'}", f"OUTPUT_HEIGHT={out / 'height.tif'}",
    )
    assert result.returncode != 0
    text = result.stdout + result.stderr
    assert "has 4 usable band(s) but the model expects 3" in text
    assert "Traceback" not in text
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.qgis
@needs_qgis
def test_qgis_predict_refuses_malicious_checkpoints_without_running_code(
    qgis_env, scene, tmp_path
):
    """Picking a booby-trapped checkpoint in QGIS's file dialog runs none of its code."""
    from _malicious import build_malicious

    marker = tmp_path / "PWNED"
    for kind, path in build_malicious(tmp_path / "evil", marker).items():
        out = tmp_path / f"out_{kind}"
        result = qgis_process(
            qgis_env, "run", "semimtl-geo:predict", "--",
            f"INPUT={scene['raster']}", f"CHECKPOINT={path}", "DEVICE=cpu",
            f"OUTPUT_CLASS={out / 'classes.tif'}", f"OUTPUT_HEIGHT={out / 'height.tif'}",
        )
        assert result.returncode != 0, kind
        assert not marker.exists(), f"the {kind} checkpoint's code ran"
        text = result.stdout + result.stderr
        assert f"Checkpoint '{path}' is a pickled torch file" in text, text[-2000:]
        assert "Traceback" not in text
        assert not out.exists() or not any(out.iterdir())


@pytest.mark.qgis
@needs_qgis
def test_qgis_former_names_of_the_executable_still_work_with_a_note(qgis_env, scene, tmp_path):
    """SEMIMTL_CLI (parameter) and $SEMIMTL_GEO_CLI (environment) were renamed EXECUTABLE and
    $SEMIMTL_GEO_EXECUTABLE; scripts and shells that set the old names keep working."""
    cli = fake_cli(tmp_path, 'sys.stderr.write("Error: the fake CLI ran.\\n"); sys.exit(1)\n',
                   "old-cli")
    args = ("run", "semimtl-geo:predict", "--", f"INPUT={scene['raster']}",
            f"CHECKPOINT={scene['ckpt']}", f"OUTPUT_CLASS={tmp_path / 'o' / 'c.tif'}",
            f"OUTPUT_HEIGHT={tmp_path / 'o' / 'h.tif'}")
    result = qgis_process(qgis_env, *args, f"SEMIMTL_CLI={cli}")
    text = result.stdout + result.stderr
    assert result.returncode != 0 and "the fake CLI ran" in text, text[-2000:]
    assert "The parameter SEMIMTL_CLI is deprecated" in text and "as EXECUTABLE" in text
    env = {**qgis_env["env"], "SEMIMTL_GEO_CLI": str(cli)}
    env.pop("SEMIMTL_GEO_EXECUTABLE", None)
    result = qgis_process({**qgis_env, "env": env}, *args)
    text = result.stdout + result.stderr
    assert result.returncode != 0 and "the fake CLI ran" in text, text[-2000:]
    assert "$SEMIMTL_GEO_CLI is deprecated" in text


@pytest.mark.qgis
@needs_qgis
def test_qgis_cancel_kills_the_cli_and_leaves_nothing(qgis_env, scene, tmp_path):
    slow = fake_cli(tmp_path, """
        import os
        os.makedirs(sys.argv[sys.argv.index("-o") + 1], exist_ok=True)
        for i in range(1, 101):
            sys.stderr.write(f"\\rscene.tif:  {i}%|#   | {i}/100 [00:01<00:10, 1.0win/s]")
            sys.stderr.flush()
            time.sleep(0.3)
    """)
    result = qgis_python(
        qgis_env, "cancel", str(qgis_env["plugins"]), str(slow), str(scene["raster"])
    )
    assert result["error"] == "Canceled; no output was written."
    assert result["progress"] and result["seconds"] < 10
    assert result["left"] == []



@pytest.mark.qgis
@needs_qgis
def test_qgis_predict_other_pixel_types_need_the_input_values_choice(qgis_env, scene, tmp_path):
    out = tmp_path / "out"
    args = ["run", "semimtl-geo:predict", "--", f"INPUT={scene['wide']}",
            f"CHECKPOINT={scene['ckpt']}", "DEVICE=cpu", f"OUTPUT_CLASS={out / 'classes.tif'}",
            f"OUTPUT_HEIGHT={out / 'height.tif'}"]
    refused = qgis_process(qgis_env, *args)
    assert refused.returncode != 0
    text = refused.stdout + refused.stderr
    assert "holds uint16 values but the model was trained on uint8" in text
    assert "Traceback" not in text
    done = qgis_process(qgis_env, *args, "RESCALE=1")  # percentile stretch
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "--rescale percentile" in done.stdout
    assert (out / "classes.tif").is_file() and (out / "height.tif").is_file()
