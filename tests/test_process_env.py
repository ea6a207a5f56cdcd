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
