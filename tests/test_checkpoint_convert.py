"""``semimtl-geo convert-checkpoint``: pickled checkpoints of earlier versions, made safe."""

from pathlib import Path

import numpy as np
import pytest
import torch
from _predict_helpers import tiny_checkpoint

from semimtl_geo.checkpoint import CHECKPOINT_KEY, load_model_checkpoint
from semimtl_geo.checkpoint_file import read_checkpoint_file, sniff
from semimtl_geo.cli.main import main


@pytest.fixture(scope="module")
def legacy(tmp_path_factory):
    """A safe checkpoint and the same content pickled the way earlier versions wrote it."""
    tmp = tmp_path_factory.mktemp("legacy")
    safe = tiny_checkpoint(tmp / "safe.pt", output_stride=32)
    raw = read_checkpoint_file(safe)
    old = tmp / "old.pt"
    torch.save(raw, old)
    return safe, old, raw


def _outputs(path: Path) -> dict:
    x = torch.linspace(-1, 1, 3 * 64 * 64).reshape(1, 3, 64, 64)
    with torch.no_grad():
        return load_model_checkpoint(path).model(x)


def test_converts_an_old_model_without_unrestricted_unpickling(legacy, tmp_path, capsys):
    safe, old, _ = legacy
    out = tmp_path / "new.pt"
    assert main(["convert-checkpoint", str(old), "-o", str(out)]) == 0
    captured = capsys.readouterr()
    assert "convert only files from a source you trust" in captured.err
    assert "Converted" in captured.out and "training state" not in captured.out
    assert sniff(out) == "safetensors"
    a, b = _outputs(safe), _outputs(out)
    assert torch.equal(a["seg"], b["seg"]) and torch.equal(a["height"], b["height"])
    assert load_model_checkpoint(out).meta == load_model_checkpoint(safe).meta


def test_objects_beyond_plain_data_need_unrestricted(legacy, tmp_path, capsys):
    _, _, raw = legacy
    payload = raw[CHECKPOINT_KEY]
    odd = tmp_path / "odd.pt"  # numpy scalars and a Path: harmless, but not weights_only
    torch.save({CHECKPOINT_KEY: {**payload,
                                 "meta": {**payload["meta"], "gsd": np.float64(0.25)},
                                 "config": {"root": Path("/data/isprs")}}}, odd)
    out = tmp_path / "new.pt"
    assert main(["convert-checkpoint", str(odd), "-o", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"Error: Checkpoint '{odd}' names the Python object 'numpy")
    assert "--unrestricted only if you trust" in err and not out.exists()
    assert main(["convert-checkpoint", str(odd), "-o", str(out), "--unrestricted"]) == 0
    loaded = load_model_checkpoint(out)
    assert loaded.meta.gsd == 0.25 and type(loaded.meta.gsd) is float
    assert loaded.config == {"root": "/data/isprs"}


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda t, safe: safe, "is already in the safe format"),
        (lambda t, safe: t / "missing.pt", "does not exist"),
        (lambda t, safe: (t / "x.txt", (t / "x.txt").write_text("hello"))[0],
         "is not a torch checkpoint file"),
        (lambda t, safe: (t / "f.pt", torch.save({"state_dict": {}}, t / "f.pt"))[0],
         "was not written by semimtl-geo"),
        (lambda t, safe: (t / "p.pt", torch.save({CHECKPOINT_KEY: {"model": {}}}, t / "p.pt"))[0],
         "is not a valid semimtl-geo model"),
    ],
)
def test_refusals_are_one_sentence_and_write_nothing(legacy, tmp_path, capsys, make, message):
    src = make(tmp_path, legacy[0])
    out = tmp_path / "out" / "new.pt"
    assert main(["convert-checkpoint", str(src), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert message in err.strip().splitlines()[-1] and "Traceback" not in err
    assert not out.exists() and not (out.parent.exists() and any(out.parent.iterdir()))


def test_existing_output_needs_overwrite(legacy, tmp_path, capsys):
    _, old, _ = legacy
    out = tmp_path / "new.pt"
    out.write_bytes(b"keep me")
    assert main(["convert-checkpoint", str(old), "-o", str(out)]) == 1
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert out.read_bytes() == b"keep me"
    assert main(["convert-checkpoint", str(old), "-o", str(out), "--overwrite"]) == 0
    assert sniff(out) == "safetensors"
