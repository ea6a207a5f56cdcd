"""Process defaults the CLI sets before torch and GDAL load (semimtl_geo/process_env.py)."""

import os
import subprocess
import sys

import pytest

from semimtl_geo.process_env import DEFAULTS, set_process_defaults, tune_allocator


def test_defaults_fill_only_what_the_user_left_unset(monkeypatch):
    for key in DEFAULTS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")  # the user's choice wins
    set_process_defaults()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
    for key, value in DEFAULTS.items():
        if key != "OMP_WAIT_POLICY":
            assert os.environ[key] == value


def test_the_cli_sets_them_before_anything_loads_torch_or_gdal():
    """The variables only act if set before libgomp / GDAL load: the entry point's
    imports before the call must load neither."""
    code = ("import sys\n"
            "import click, semimtl_geo, semimtl_geo.errors, semimtl_geo.outputs\n"
            "import semimtl_geo.process_env\n"
            "print(sorted(m for m in ('torch', 'rasterio') if m in sys.modules))\n"
            "import semimtl_geo.cli.main, os\n"
            "print(os.environ['OMP_WAIT_POLICY'])\n")
    env = {k: v for k, v in os.environ.items() if k not in DEFAULTS}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, check=True).stdout.split()
    assert out == ["[]", "PASSIVE"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_allocator_thresholds_are_accepted_by_glibc():
    import platform

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("not glibc")
    assert tune_allocator(32 * 1024 * 1024, 256 * 1024 * 1024)


@pytest.mark.parametrize("value", ["32M", "-1", "", "99999999999"])
def test_a_bad_threshold_the_user_exported_ends_in_one_sentence(value):
    """``MALLOC_MMAP_THRESHOLD_=32M semimtl-geo ...`` used to end in a ValueError traceback."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": value}
    proc = subprocess.run([sys.executable, "-c", "import semimtl_geo.cli.main"],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "MALLOC_MMAP_THRESHOLD_" in lines[0] and "unset it" in lines[0]


def test_a_valid_threshold_the_user_exported_is_kept(monkeypatch):
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", " 1048576")
    set_process_defaults()
    assert os.environ["MALLOC_TRIM_THRESHOLD_"] == " 1048576"
