import os

import pytest
import torch

from semimtl_geo.checkpoint import ModelMeta, load_model_checkpoint, save_model_checkpoint
from semimtl_geo.classes import ISPRS_CLASSES
from semimtl_geo.errors import UserError
from semimtl_geo.models import MultiTaskNet


def test_checkpoint_roundtrip(tmp_path) -> None:
    net = MultiTaskNet("resnet18", in_channels=4, num_classes=6, output_stride=16).eval()
    meta = ModelMeta(bands=["R", "G", "B", "IR"], mean=[0.1] * 4, std=[0.2] * 4, height_scale=42.0)
    path = save_model_checkpoint(tmp_path / "m.pt", net, meta, {"method": "semimtl"})
    assert not list(tmp_path.glob("*.tmp"))
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's private 0600
    loaded = load_model_checkpoint(path)
    assert loaded.meta == meta and loaded.meta.classes == ISPRS_CLASSES
    assert loaded.config == {"method": "semimtl"}
    assert loaded.model.config() == net.config()
    x = torch.randn(1, 4, 64, 64)
    with torch.no_grad():
        a, b = net(x), loaded.model(x)
    assert torch.allclose(a["seg"], b["seg"]) and torch.allclose(a["height"], b["height"])


def test_checkpoint_errors(tmp_path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        load_model_checkpoint(tmp_path / "none.pt")
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    with pytest.raises(UserError, match="could not be read"):
        load_model_checkpoint(tmp_path / "bad.pt")
    torch.save({"state_dict": {}}, tmp_path / "foreign.pt")
    with pytest.raises(UserError, match="not written by semimtl-geo"):
        load_model_checkpoint(tmp_path / "foreign.pt")


def test_atomic_outputs_get_normal_permissions_and_leave_nothing_on_error(tmp_path) -> None:
    from semimtl_geo.atomic import atomic_output, atomic_write_text, umask_mode

    path = atomic_write_text(tmp_path / "report.md", "hello\n")
    assert path.read_text() == "hello\n"
    assert path.stat().st_mode & 0o777 == umask_mode()  # not mkstemp's private 0600
    with pytest.raises(RuntimeError):
        with atomic_output(tmp_path / "half.bin") as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("interrupted")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.md"]
