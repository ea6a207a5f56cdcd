"""``predict`` output sets (issue 13): published together, never mixed, never lost.

Also folder/glob inputs (only rasters GDAL opens, never the tool's own outputs), batches
that survive a damaged input, and the clean-up of what a killed run left behind.
"""

import errno
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import rasterio
from _predict_helpers import textured, tiny_checkpoint, write_raster
from affine import Affine

import semimtl_geo.inference.publish as publish
from semimtl_geo.cli.main import main
from semimtl_geo.inference.inputs import expand_inputs
from semimtl_geo.inference.writers import OutputRaster

FAST = ["--device", "cpu", "--batch-size", "8"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.ckpt")


def _snapshot(folder: Path) -> dict[str, bytes]:
    """Every entry of ``folder`` (hidden ones included) with its bytes."""
    return {p.name: (p.read_bytes() if p.is_file() else b"<dir>") for p in folder.iterdir()}


def _fail_height_commit(monkeypatch) -> None:
    real = OutputRaster.commit

    def commit(self):
        if self.path.name.endswith("_height.tif"):
            self.dst.close()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))
        return real(self)

    monkeypatch.setattr(OutputRaster, "commit", commit)


def test_failed_replacement_keeps_the_previous_set(tmp_path, ckpt, capsys, monkeypatch):
    image = write_raster(tmp_path / "a.tif", textured(48, 48))
    out = tmp_path / "out"
    assert main(["predict", str(image), "-o", str(out), "--checkpoint", str(ckpt), *FAST,
                 "--vectorize"]) == 0
    before = _snapshot(out)
    assert set(before) == {"a_class.tif", "a_height.tif", "a_class.qml", "a_height.qml",
                           "a_preview.png", "a_classes.gpkg"}
    _fail_height_commit(monkeypatch)  # the disk fills up after the class raster is done
    assert main(["predict", str(image), "-o", str(out), "--checkpoint", str(ckpt), *FAST,
                 "--overwrite", "--vectorize"]) == 1
    err = capsys.readouterr().err
    assert "No space left on device" in err and "Traceback" not in err
    assert _snapshot(out) == before  # old set intact, no new (or hidden) file


def test_failed_first_run_adds_no_file(tmp_path, ckpt, capsys, monkeypatch):
    image = write_raster(tmp_path / "a.tif", textured(48, 48))
    _fail_height_commit(monkeypatch)
    existing = tmp_path / "existing"
    existing.mkdir()
    for out in (tmp_path / "new", existing):
        assert main(["predict", str(image), "-o", str(out), "--checkpoint", str(ckpt),
                     *FAST]) == 1
    assert not (tmp_path / "new").exists()  # not even the folder
    assert list(existing.iterdir()) == []  # no lone a_class.tif


def test_a_replaced_set_keeps_nothing_of_the_old_one(tmp_path, ckpt, capsys):
    image = write_raster(tmp_path / "a.tif", textured(48, 48))
    out = tmp_path / "out"
    assert main(["predict", str(image), "-o", str(out), "--checkpoint", str(ckpt), *FAST,
                 "--vectorize", "--confidence"]) == 0
    assert {"a_classes.gpkg", "a_confidence.tif", "a_confidence.qml"} <= {
        p.name for p in out.iterdir()}
    # another subset of the same input's outputs is still a replacement of its set
    assert main(["predict", str(image), "-o", str(out), "--checkpoint", str(ckpt), *FAST,
                 "--tasks", "height", "--no-preview"]) == 1
    assert "already exists" in capsys.readouterr().err
    assert main(["predict", str(image), "-o", str(out), "--checkpoint", str(ckpt), *FAST,
                 "--tasks", "height", "--no-preview", "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a_height.qml", "a_height.tif"]


def test_publish_restores_the_previous_set_when_a_move_fails(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    for suffix in ("_class.tif", "_height.tif", "_classes.gpkg"):
        (out / f"a{suffix}").write_text(f"old{suffix}")
    before = _snapshot(out)
    outputs = publish.OutputSet(out, "a")
    finals = [out / "a_class.tif", out / "a_height.tif"]
    for f in finals:
        outputs.staged(f).write_text("new")
    real = os.replace
    calls = []

    def flaky(src, dst):
        calls.append(dst)
        if Path(dst).name == "a_height.tif" and "partial" in str(src):
            raise OSError(errno.EIO, "I/O error")
        return real(src, dst)

    monkeypatch.setattr(publish.os, "replace", flaky)
    with pytest.raises(OSError, match="I/O error"), outputs:
        outputs.publish(finals)
    monkeypatch.undo()
    assert _snapshot(out) == before
    # and a successful publication replaces the whole set
    outputs = publish.OutputSet(out, "a")
    for f in finals:
        outputs.staged(f).write_text("new")
    outputs.publish(finals)
    assert _snapshot(out) == {"a_class.tif": b"new", "a_height.tif": b"new"}


def test_folder_inputs_take_only_rasters_that_are_not_outputs(tmp_path, ckpt, capsys):
    folder = tmp_path / "tiles"
    folder.mkdir()
    write_raster(folder / "a.tif", textured(40, 40))
    (folder / "notes.txt").write_text("field notes")
    (folder / "broken.tif").write_bytes(b"not a tiff")
    (folder / ".hidden.tif").write_bytes(b"")
    from PIL import Image

    Image.fromarray(textured(32, 32).transpose(1, 2, 0)).save(folder / "photo.png")
    assert main(["predict", str(folder), "-o", str(folder), "--checkpoint", str(ckpt),
                 *FAST]) == 0
    first = sorted(p.name for p in folder.iterdir())
    # renamed outputs and previews are recognised by their software metadata
    os.replace(folder / "a_class.tif", folder / "renamed.tif")
    os.replace(folder / "a_preview.png", folder / "look.png")
    capsys.readouterr()
    selection = expand_inputs([str(folder)])
    assert [p.name for p in selection.files] == ["a.tif", "photo.png"]
    line = selection.skipped_line()
    assert line.count("\n") == 0
    for name in ("notes.txt", "broken.tif", "renamed.tif", "look.png", "a_height.tif",
                 "photo_class.tif"):
        assert name in line, name
    # predicting the folder into itself again, twice, compounds nothing
    for _ in range(2):
        assert main(["predict", str(folder), "-o", str(folder), "--checkpoint", str(ckpt),
                     *FAST, "--overwrite"]) == 0
    names = sorted(p.name for p in folder.iterdir())
    assert not [n for n in names if "_class_" in n or "_preview_" in n or "look_" in n]
    assert set(names) == set(first) | {"renamed.tif", "look.png"}
    err = capsys.readouterr().err
    assert "Note: Skipped" in err


def test_glob_inputs_skip_outputs_too(tmp_path, ckpt):
    write_raster(tmp_path / "a.tif", textured(40, 40))
    assert main(["predict", str(tmp_path / "a.tif"), "-o", str(tmp_path), "--checkpoint",
                 str(ckpt), *FAST]) == 0
    selection = expand_inputs([str(tmp_path / "*.tif")])
    assert [p.name for p in selection.files] == ["a.tif"]
    assert sorted(p.name for p in selection.skipped) == ["a_class.tif", "a_height.tif"]
    only_outputs = expand_inputs([str(tmp_path / "*_class.tif")])
    assert only_outputs.files == [] and "other than semimtl-geo outputs" in only_outputs.problems[0]


def _corrupt_tile_raster(path: Path) -> Path:
    """A tiled, deflated GeoTIFF that opens but whose block (2, 2) is garbage."""
    profile = dict(driver="GTiff", width=128, height=128, count=3, dtype="uint8",
                   crs="EPSG:32633", transform=Affine(0.09, 0, 500000, 0, -0.09, 5800000),
                   tiled=True, blockxsize=32, blockysize=32, compress="deflate",
                   photometric="MINISBLACK")
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(textured(128, 128))
    with rasterio.open(path) as src:
        offset = int(src.get_tag_item("BLOCK_OFFSET_2_2", "TIFF", bidx=1))
        size = int(src.get_tag_item("BLOCK_SIZE_2_2", "TIFF", bidx=1))
    data = bytearray(path.read_bytes())
    data[offset:offset + size] = b"\xff" * size
    path.write_bytes(bytes(data))
    return path


def test_a_damaged_block_fails_only_that_input(tmp_path, ckpt, capsys):
    folder = tmp_path / "batch"
    folder.mkdir()
    _corrupt_tile_raster(folder / "b_damaged.tif")
    write_raster(folder / "a.tif", textured(48, 48))
    write_raster(folder / "c.tif", textured(48, 48, seed=2))
    out = tmp_path / "out"
    assert main(["predict", str(folder), "-o", str(out), "--checkpoint", str(ckpt), *FAST,
                 "--no-preview"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "'b_damaged.tif' has unreadable data in rows" in err and "damaged" in err
    assert "1 input(s) failed" in err
    names = sorted(p.name for p in out.iterdir())
    assert names == ["a_class.qml", "a_class.tif", "a_height.qml", "a_height.tif",
                     "c_class.qml", "c_class.tif", "c_height.qml", "c_height.tif"]


def test_leftovers_of_a_killed_run_are_cleaned_up(tmp_path, ckpt, capsys):
    image = write_raster(tmp_path / "a.tif", textured(40, 40))
    out = tmp_path / "out"
    out.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_pid = int(dead.stdout)
    stale = out / f".a.partial-{publish._HOST}-{dead_pid}-x1y2"
    stale.mkdir()
    (stale / "a_class.tif").write_bytes(b"half")
    running = out / f".a.partial-{publish._HOST}-{os.getpid()}-busy"
    running.mkdir()
    other_host = out / f".a.partial-otherhost-{dead_pid}-abcd"
    other_host.mkdir()
    legacy = out / ".a_class.k2j3h4g5.partial.tif"
    legacy.write_bytes(b"half")
    old = time.time() - 2 * publish.LEGACY_STALE_SECONDS
    os.utime(legacy, (old, old))
    fresh_legacy = out / ".a_height.abcdefgh.cog.tif"
    fresh_legacy.write_bytes(b"being written")
    unrelated = out / ".b_class.k2j3h4g5.partial.tif"
    unrelated.write_bytes(b"another input")
    os.utime(unrelated, (old, old))
    assert main(["predict", str(image), "-o", str(out), "--checkpoint", str(ckpt), *FAST,
                 "--no-preview"]) == 0
    assert not stale.exists() and not legacy.exists()
    assert running.exists() and other_host.exists() and fresh_legacy.exists()
    assert unrelated.exists()  # another input's leftovers are its own run's business
    err = capsys.readouterr().err
    assert "left in" in err and "interrupted run" in err
