"""The one temporary-name-then-rename writer: files, file groups and folders."""

import errno
import os

import pytest

from semimtl_geo import atomic
from semimtl_geo.atomic import (
    atomic_dir,
    atomic_outputs,
    atomic_write_json,
    hidden_dir,
    replace_files,
)
from semimtl_geo.errors import UserError


def _fail_rename_onto(monkeypatch, name: str) -> None:
    """Make ``os.replace`` fail with EIO when a staged file is renamed onto ``name``."""
    real = os.replace

    def flaky(src, dst):
        if os.path.basename(dst) == name and "replaced-" not in str(src):
            raise OSError(errno.EIO, "I/O error")
        return real(src, dst)

    monkeypatch.setattr(atomic.os, "replace", flaky)


def test_file_group_is_renamed_together_or_not_at_all(tmp_path):
    paths = {"a": tmp_path / "x" / "a.txt", "b": tmp_path / "y" / "b.txt"}
    paths["a"].parent.mkdir()
    paths["a"].write_text("old")
    with pytest.raises(RuntimeError), atomic_outputs(paths, suffix=".partial") as tmps:
        tmps["a"].write_text("new")
        raise RuntimeError("interrupted")
    assert paths["a"].read_text() == "old" and not paths["b"].exists()
    assert not list(tmp_path.rglob("*.partial"))

    with atomic_outputs({**paths, "c": tmp_path / "c.txt"}) as tmps:
        tmps["a"].write_text("new")
        tmps["b"].write_text("b")  # 'c' is never written: it is not created
    assert paths["a"].read_text() == "new" and paths["b"].read_text() == "b"
    assert not (tmp_path / "c.txt").exists() and not list(tmp_path.rglob(".*.tmp"))


def test_folder_is_replaced_whole_or_kept(tmp_path):
    target = tmp_path / "plugin"
    with atomic_dir(target) as stage:
        (stage / "one.txt").write_text("1")
    assert target.stat().st_mode & 0o777 != 0o700  # not mkdtemp's private mode
    with pytest.raises(KeyboardInterrupt), atomic_dir(target) as stage:
        (stage / "two.txt").write_text("2")
        raise KeyboardInterrupt
    assert sorted(p.name for p in target.iterdir()) == ["one.txt"]
    with atomic_dir(target) as stage:
        (stage / "two.txt").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["two.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plugin"]  # nothing left beside


def test_json_is_written_whole(tmp_path):
    path = atomic_write_json(tmp_path / "m.json", {"a": [1, 2]})
    assert path.read_text() == '{\n  "a": [\n    1,\n    2\n  ]\n}\n'


def test_file_group_is_unchanged_when_a_later_rename_fails(tmp_path, monkeypatch):
    """The renames are one step ('a' used to stay new when renaming 'b' failed)."""
    paths = {"a": tmp_path / "a.txt", "b": tmp_path / "b.txt"}
    for key, path in paths.items():
        path.write_text(f"old {key}")
    _fail_rename_onto(monkeypatch, "b.txt")
    with pytest.raises(OSError, match="I/O error"), atomic_outputs(paths) as tmps:
        tmps["a"].write_text("new a")
        tmps["b"].write_text("new b")
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == {
        "a.txt": "old a", "b.txt": "old b"}  # no temporary or backup folder left either


@pytest.mark.parametrize("hard_links", [True, False])
def test_replace_files_swaps_a_set_and_removes_its_extras(tmp_path, monkeypatch, hard_links):
    if not hard_links:  # FAT, some network shares: the old files are moved aside instead
        def no_link(*args, **kwargs):
            raise OSError(errno.EPERM, "Operation not permitted")

        monkeypatch.setattr(atomic.os, "link", no_link)
    out = tmp_path / "out"
    stage = hidden_dir(out, ".stage-")
    for name in ("a.tif", "extra.gpkg"):
        (out / name).write_text(f"old {name}")
    moves = [(stage / "a.tif", out / "a.tif"), (stage / "b.tif", out / "b.tif")]
    family = [out / n for n in ("a.tif", "b.tif", "extra.gpkg", "absent.qml")]

    def files() -> dict[str, str]:
        return {p.name: p.read_text() for p in out.iterdir() if p.is_file()}

    for name in ("a.tif", "b.tif"):
        (stage / name).write_text(f"new {name}")
    with monkeypatch.context() as patch:
        _fail_rename_onto(patch, "b.tif")
        with pytest.raises(OSError, match="I/O error"):
            replace_files(moves, remove=family, backup_prefix=".x.replaced-")
    assert files() == {"a.tif": "old a.tif", "extra.gpkg": "old extra.gpkg"}
    assert not list(out.glob(".x.replaced-*"))

    for name in ("a.tif", "b.tif"):  # the failed attempt removed the file it had placed
        (stage / name).write_text(f"new {name}")
    assert replace_files(moves, remove=family, backup_prefix=".x.replaced-") == [
        out / "a.tif", out / "b.tif"]
    assert files() == {"a.tif": "new a.tif", "b.tif": "new b.tif"}  # no old extra
    assert sorted(p.name for p in out.iterdir()) == sorted([stage.name, "a.tif", "b.tif"])


def test_hidden_dir_is_not_private_and_names_the_target_on_write_errors(tmp_path, monkeypatch):
    folder = hidden_dir(tmp_path / "new" / "deeper", ".x-")
    assert folder.name.startswith(".x-") and folder.parent == tmp_path / "new" / "deeper"
    assert folder.stat().st_mode & 0o777 == atomic.umask_mode(directory=True)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(atomic.tempfile, "mkdtemp", full)
    with pytest.raises(UserError, match="target.tif"):
        hidden_dir(tmp_path, ".y-", target=tmp_path / "target.tif")


def test_renames_happen_only_in_atomic_py():
    """One home for temp-name-then-rename (issue 15): no other module of the package, the
    CLI or the benchmarks calls ``os.replace``/``os.rename`` or ``Path.rename``/``.replace``
    with a path argument; they use :mod:`semimtl_geo.atomic` instead."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    offenders = []
    for folder in ("semimtl_geo", "cli", "benchmarks"):
        for path in sorted((root / folder).rglob("*.py")):
            if path.name == "atomic.py" and path.parent.name == "semimtl_geo":
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                    continue
                name, owner = node.func.attr, node.func.value
                is_os_call = isinstance(owner, ast.Name) and owner.id == "os"
                if (is_os_call and name in {"replace", "rename", "renames"}) or (
                        name == "rename" and len(node.args) == 1):
                    offenders.append(f"{path.relative_to(root)}:{node.lineno}")
    assert not offenders, f"hand-rolled renames outside semimtl_geo/atomic.py: {offenders}"
