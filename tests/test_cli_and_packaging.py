import subprocess
import sys
import tomllib
from pathlib import Path

from semimtl_geo import __version__
from semimtl_geo.cli.main import main

ROOT = Path(__file__).resolve().parents[1]


def test_version_and_help(capsys) -> None:
    assert main(["--version"]) == 0
    assert __version__ in capsys.readouterr().out
    assert main(["--help"]) == 0
    assert "Usage" in capsys.readouterr().out


def test_unknown_command_exits_nonzero(capsys) -> None:
    assert main(["no-such-command"]) != 0


def test_console_script_runs() -> None:
    exe = Path(sys.executable).parent / "semimtl-geo"
    out = subprocess.run([str(exe), "--version"], capture_output=True, text=True, check=True)
    assert __version__ in out.stdout


def test_every_package_folder_is_listed_in_pyproject() -> None:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(cfg["tool"]["setuptools"]["packages"])
    found = {"semimtl_geo.cli"}
    for init in (ROOT / "semimtl_geo").rglob("__init__.py"):
        rel = init.parent.relative_to(ROOT)
        found.add(".".join(rel.parts))
    assert found <= listed, f"add {sorted(found - listed)} to [tool.setuptools] packages"
    assert not (ROOT / "cli" / "__init__.py").exists() or "cli" not in listed


def test_no_bare_cli_module_installed() -> None:
    import importlib.util

    spec = importlib.util.find_spec("cli")
    assert spec is None or "semimtl" not in str(spec.origin or "")


def test_declared_test_dependencies_are_installed() -> None:
    """Every package of the [test] extra imports: tests never skip for a missing one."""
    import importlib
    import re

    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for requirement in cfg["project"]["optional-dependencies"]["test"]:
        name = re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0]
        importlib.import_module(name.replace("-", "_"))  # ImportError fails the test
