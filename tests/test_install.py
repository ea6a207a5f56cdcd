"""Install from a built wheel: the README's commands give a working `semimtl-geo`.

The test builds the wheel the way the README says (``pip wheel --no-deps -w dist .``),
creates a fresh virtual environment outside the checkout and installs the wheel into it
with ``pip`` (no index: nothing is downloaded). So that torch and the other dependencies
are not downloaded again, the fresh environment sees the already-installed dependencies
of the test's own environment through a ``.pth`` file; the semimtl-geo package itself
comes only from the wheel (the test checks where it is imported from). Then
``semimtl-geo --help`` and a command that needs the wheel's package data run there.
"""

import os
import re
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

from semimtl_geo import __version__

ROOT = Path(__file__).resolve().parents[1]


def _dependency_paths() -> list[str]:
    """Site-packages folders of this interpreter (where torch & co. are installed)."""
    paths = [*site.getsitepackages(), sysconfig.get_paths()["purelib"]]
    paths += [p for p in sys.path if p.endswith("site-packages")]
    seen: list[str] = []
    for p in paths:
        if Path(p).is_dir() and p not in seen:
            seen.append(p)
    return seen


def _run(argv: list[str], cwd: Path, env: dict[str, str], timeout: int = 300):
    out = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True,
                         timeout=timeout)
    assert out.returncode == 0, f"{' '.join(argv)}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


def test_readme_gives_clone_and_wheel_install_commands():
    text = (ROOT / "README.md").read_text()
    assert "pip install -e '.[onnx]'" in text  # from a clone
    assert "pip wheel --no-deps -w dist ." in text  # build the wheel
    assert f"pip install 'dist/semimtl_geo-{__version__}-py3-none-any.whl[onnx]'" in text


def test_wheel_installs_into_a_clean_venv_and_runs(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    dist = tmp_path / "dist"
    # The README's build command (no build isolation: setuptools comes from this env).
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
          "-w", str(dist), str(ROOT)], cwd=tmp_path, env=env)
    wheels = list(dist.glob("semimtl_geo-*.whl"))
    assert [w.name for w in wheels] == [f"semimtl_geo-{__version__}-py3-none-any.whl"]
    names = zipfile.ZipFile(wheels[0]).namelist()
    assert "semimtl_geo/cli/main.py" in names and "semimtl_geo/qgis_plugin/metadata.txt" in names
    assert not any(n.startswith(("tests/", "cli/")) for n in names)

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path, env=env)
    py = venv / "bin" / "python"
    purelib = _run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                   cwd=tmp_path, env=env).stdout.strip()
    (Path(purelib) / "zz_deps.pth").write_text("\n".join(_dependency_paths()) + "\n")
    # pip resolves every declared dependency against what is installed: no index, no download.
    _run([str(py), "-m", "pip", "install", "-q", "--no-index", str(wheels[0])],
         cwd=tmp_path, env=env)
    where = _run([str(py), "-c", "import semimtl_geo.cli.main as m; print(m.__file__)"],
                 cwd=tmp_path, env=env).stdout.strip()
    assert Path(where).is_relative_to(venv), f"semimtl_geo imported from {where}, not the wheel"

    exe = venv / "bin" / "semimtl-geo"
    helped = _run([str(exe), "--help"], cwd=tmp_path, env=env).stdout
    for command in ("train", "predict", "export-onnx", "evaluate", "qgis-plugin"):
        assert re.search(rf"^\s+{re.escape(command)}\s", helped, flags=re.M), helped
    # Package data (the QGIS plugin files) came with the wheel.
    _run([str(exe), "qgis-plugin", "zip", "-o", str(tmp_path / "plugin.zip")], cwd=tmp_path,
         env=env)
    assert "semimtl_geo_qgis/metadata.txt" in zipfile.ZipFile(tmp_path / "plugin.zip").namelist()
