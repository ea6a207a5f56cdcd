import json
import math
import os

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from semimtl_geo.checkpoint import (
    CHECKPOINT_KEY,
    ModelMeta,
    checkpoint_payload,
    load_model_checkpoint,
    save_model_checkpoint,
)
from semimtl_geo.checkpoint_file import FILE_FORMAT, read_checkpoint_file, write_checkpoint_file
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


@pytest.mark.parametrize("norm", ["batch", "domain"])
def test_checkpoint_roundtrip_with_seg_skip(tmp_path, norm) -> None:
    """model.seg_skip survives the checkpoint; a non-bool value in the file is refused."""
    torch.manual_seed(3)
    domains = ["potsdam", "vaihingen"] if norm == "domain" else None
    net = MultiTaskNet("resnet18", 3, 6, ("seg", "height"), None, 16, norm=norm,
                       domains=domains, seg_skip=True, height_channels=64, seg_channels=80)
    for name, buf in net.named_buffers():  # non-trivial statistics
        if name.endswith("running_mean"):
            buf.uniform_(-0.2, 0.2)
    net.eval()
    meta = ModelMeta(bands=["R", "G", "B"], mean=[0.1] * 3, std=[0.2] * 3, height_scale=1.0)
    path = save_model_checkpoint(tmp_path / "m.pt", net, meta)
    loaded = load_model_checkpoint(path)
    assert loaded.model.seg_skip and loaded.model.height_channels == 64
    assert loaded.model.heads["seg"].fuse[0].out_channels == 80
    assert loaded.model.config() == net.config()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        a, b = net(x), loaded.model(x)
    assert torch.equal(a["seg"], b["seg"]) and torch.equal(a["height"], b["height"])
    payload = read_checkpoint_file(path)
    payload[CHECKPOINT_KEY]["model"]["seg_skip"] = "yes"
    write_checkpoint_file(payload, tmp_path / "bad.pt")
    with pytest.raises(UserError, match="model 'seg_skip' is 'yes'"):
        load_model_checkpoint(tmp_path / "bad.pt")
    payload = read_checkpoint_file(path)
    payload[CHECKPOINT_KEY]["model"]["seg_channels"] = 0
    write_checkpoint_file(payload, tmp_path / "bad.pt")
    with pytest.raises(UserError, match="model 'seg_channels' is 0"):
        load_model_checkpoint(tmp_path / "bad.pt")


def test_checkpoint_errors(tmp_path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        load_model_checkpoint(tmp_path / "none.pt")
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    with pytest.raises(UserError, match="could not be read"):
        load_model_checkpoint(tmp_path / "bad.pt")
    write_checkpoint_file({"state_dict": {}}, tmp_path / "foreign.pt")
    with pytest.raises(UserError, match="not written by semimtl-geo"):
        load_model_checkpoint(tmp_path / "foreign.pt")
    save_file({"w": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(UserError, match="safetensors file without semimtl-geo's metadata"):
        load_model_checkpoint(tmp_path / "plain.safetensors")
    torch.save({"state_dict": {}}, tmp_path / "pickled.pt")
    with pytest.raises(UserError, match="is a pickled torch file.*convert-checkpoint"):
        load_model_checkpoint(tmp_path / "pickled.pt")


def _container(path, tree, meta):
    metadata = {"format": FILE_FORMAT, "version": "1", "tree": json.dumps(tree), **meta}
    save_file({"t": torch.zeros(1)}, str(path), metadata=metadata)
    return path


@pytest.mark.parametrize(
    ("tree", "meta", "message"),
    [
        ({"semimtl_geo": {"__tensor__": "missing"}}, {}, "damaged .*tensor 'missing' is missing"),
        ({"semimtl_geo": {"__reduce__": ["os.system", "touch x"]}}, {}, "unknown entry"),
        ({"semimtl_geo": {"__tensor__": "t", "x": 1}}, {}, "damaged"),
        ({"semimtl_geo": {"__items__": [[[1], 2]]}}, {}, "a dict key is a list"),
        ({"semimtl_geo": {"__float__": "1e9999x"}}, {}, "not a non-finite float"),
        ({}, {"version": "99"}, "version '99'.*upgrade semimtl-geo"),
        ({}, {"tree": "[" * 100_000 + "]" * 100_000}, "damaged"),
        ({}, {"tree": "{not json"}, "damaged"),
    ],
)
def test_hostile_or_damaged_containers_end_in_one_sentence(tmp_path, tree, meta, message):
    path = _container(tmp_path / "x.pt", tree, meta)
    with pytest.raises(UserError, match=message) as info:
        load_model_checkpoint(path)
    assert "\n" not in str(info.value) and str(info.value).endswith(".")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: p["model"].update(encoder_name="no_such_net"), "not a valid semimtl-geo model"),
        (lambda p: p["model"].update(tasks=["seg", "depth"]), "model 'tasks'"),
        (lambda p: p["model"].update(in_channels="3"), "model 'in_channels'"),
        (lambda p: p["model"].update(num_classes=7), "weights do not fit its model"),
        (lambda p: p["state_dict"].update(x=[1]), "not a mapping of names to tensors"),
        (lambda p: p.update(meta={"classes": 3}), "bad 'meta'"),
        (lambda p: p.update(format=9), "payload format 9"),
        (lambda p: p["model"].update(norm="layer"), "model 'norm' is 'layer'"),
        (lambda p: p["model"].update(norm="group"), "weights do not fit its model"),
    ],
)
def test_invalid_payloads_end_in_one_sentence(tmp_path, change, message):
    net = MultiTaskNet("resnet18", in_channels=3, num_classes=6, output_stride=32)
    payload = checkpoint_payload(net, ModelMeta())
    change(payload)
    write_checkpoint_file({CHECKPOINT_KEY: payload}, tmp_path / "m.pt")
    with pytest.raises(UserError, match=message):
        load_model_checkpoint(tmp_path / "m.pt")


def test_container_roundtrip_keeps_types_values_and_shared_tensors(tmp_path):
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    obj = {
        "ints": {0: {"step": torch.tensor(3.0)}, 5: None},  # optimiser state: int keys
        "betas": (0.9, 0.999),
        "floats": [float("nan"), float("inf"), -float("inf"), 0.1 + 0.2],
        "__dunder": True,
        "big": 2**62,
        "a": base,
        "same": base.detach(),  # same storage and layout: stored once
        "view": base[:, 1],  # non-contiguous view of it
        "t": base.t(),
        "bf16": torch.randn(5).bfloat16(),
        "empty": torch.zeros(0, 3),
        "empty2": torch.zeros(0),
        "bools": torch.tensor([True, False]),
    }
    path = write_checkpoint_file(obj, tmp_path / "c.pt")
    back = read_checkpoint_file(path)
    assert list(back) == list(obj)
    assert back["ints"][0]["step"].item() == 3.0 and back["ints"][5] is None
    assert back["betas"] == (0.9, 0.999) and isinstance(back["betas"], tuple)
    assert math.isnan(back["floats"][0]) and back["floats"][1:] == obj["floats"][1:]
    assert back["__dunder"] is True and back["big"] == 2**62
    for key in ("a", "same", "view", "t", "bf16", "empty", "empty2", "bools"):
        assert back[key].dtype == obj[key].dtype and torch.equal(back[key], obj[key]), key
    with safe_open(str(path), "pt") as fh:
        assert len(list(fh.keys())) == 8  # 7 top-level tensors ('same' is 'a') + 'step'
    header = 8 + int.from_bytes(path.read_bytes()[:8], "little")
    with path.open("r+b") as fh:  # the file changes in place: what was read must not
        fh.seek(header)
        fh.write(b"\x7f" * (path.stat().st_size - header))
    for key in ("a", "view", "bf16", "bools"):
        assert torch.equal(back[key], obj[key]), key
    with pytest.raises(TypeError, match="'x' is a PosixPath"):
        write_checkpoint_file({"x": tmp_path}, tmp_path / "bad.pt")
    assert not (tmp_path / "bad.pt").exists()


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
