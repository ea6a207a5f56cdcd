"""The one temporary-name-then-rename writer: files, file groups and folders."""

import pytest

from semimtl_geo.atomic import atomic_dir, atomic_outputs, atomic_write_json


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
