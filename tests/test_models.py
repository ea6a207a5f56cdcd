import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from semimtl_geo.errors import UserError
from semimtl_geo.models import Discriminator, MultiTaskNet
from semimtl_geo.models.encoder import build_encoder


@pytest.fixture(scope="module")
def tiny_net() -> MultiTaskNet:
    return MultiTaskNet("resnet18", in_channels=3, num_classes=6).eval()


@pytest.mark.parametrize("in_channels", [3, 4])
@pytest.mark.parametrize("size", [(64, 64), (72, 104), (96, 64)])
def test_multitask_heads_shapes_and_dtypes(in_channels: int, size: tuple[int, int]) -> None:
    net = MultiTaskNet("resnet18", in_channels=in_channels, num_classes=5).eval()
    with torch.no_grad():
        out = net(torch.randn(2, in_channels, *size))
    assert set(out) == {"seg", "height"}
    assert out["seg"].shape == (2, 5, *size)
    assert out["height"].shape == (2, 1, *size)
    assert out["seg"].dtype == torch.float32 and out["height"].dtype == torch.float32


def test_encoder_is_dilated_to_output_stride_8(tiny_net: MultiTaskNet) -> None:
    feats = tiny_net.encoder(torch.randn(1, 3, 64, 64))
    assert feats[-1].shape[-1] == 64 // 8


@pytest.mark.parametrize("tasks,expected", [("seg", {"seg"}), (["height"], {"height"})])
def test_single_task_models_have_one_head(tasks, expected) -> None:
    net = MultiTaskNet("resnet18", tasks=tasks).eval()
    assert set(net.heads.keys()) == expected
    with torch.no_grad():
        assert set(net(torch.randn(1, 3, 64, 64))) == expected


def test_wrong_band_count_is_reported(tiny_net: MultiTaskNet) -> None:
    with pytest.raises(ValueError, match="3 x H x W"):
        tiny_net(torch.randn(1, 4, 64, 64))


def test_unknown_task_and_encoder_are_user_errors() -> None:
    with pytest.raises(UserError, match="Unknown task"):
        MultiTaskNet("resnet18", tasks=["depthh"])
    with pytest.raises(UserError, match="Unknown encoder 'resnet1001'"):
        MultiTaskNet("resnet1001")


def test_full_resnet101_forward_on_cpu() -> None:
    net = MultiTaskNet().eval()  # paper default: dilated ResNet101, weights None
    assert net.encoder_name == "resnet101"
    n_params = sum(p.numel() for p in net.parameters())
    assert n_params > 40_000_000
    with torch.no_grad():
        out = net(torch.randn(1, 3, 64, 64))
    assert out["seg"].shape == (1, 6, 64, 64) and out["height"].shape == (1, 1, 64, 64)


def test_imagenet_without_network_is_one_clear_sentence() -> None:
    with pytest.raises(UserError, match="local weights file"):
        build_encoder("resnet18", weights="imagenet")


def test_local_weights_file_is_loaded(tmp_path) -> None:
    src = build_encoder("resnet18", weights=None)
    torch.save(src.state_dict(), tmp_path / "w.pth")
    enc = build_encoder("resnet18", in_channels=3, weights=tmp_path / "w.pth")
    for key, value in src.state_dict().items():
        assert torch.equal(enc.state_dict()[key], value)
    # a 4-band encoder adapts the 3-band first convolution instead of failing
    enc4 = build_encoder("resnet18", in_channels=4, weights=tmp_path / "w.pth")
    assert enc4.state_dict()["conv1.weight"].shape[1] == 4
    # the code-free format is read without any unpickling
    save_file(src.state_dict(), str(tmp_path / "w.safetensors"))
    enc = build_encoder("resnet18", in_channels=3, weights=tmp_path / "w.safetensors")
    for key, value in src.state_dict().items():
        assert torch.equal(enc.state_dict()[key], value)


def test_bad_weights_file_is_user_error(tmp_path) -> None:
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(UserError, match="could not be read"):
        build_encoder("resnet18", weights=tmp_path / "junk.pth")
    with pytest.raises(UserError, match="does not exist"):
        build_encoder("resnet18", weights=tmp_path / "missing.pth")


def test_discriminator_structure() -> None:
    disc = Discriminator(in_channels=6, num_outputs=3)
    convs = [m for m in disc.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 128, 256, 512, 3]
    assert convs[0].in_channels == 6
    assert all(c.kernel_size == (4, 4) and c.stride == (2, 2) for c in convs)
    # spectral norm on the first four convolutions only
    assert [hasattr(c, "parametrizations") and "weight" in c.parametrizations for c in convs] == [
        True,
        True,
        True,
        True,
        False,
    ]
    relus = [m for m in disc.modules() if isinstance(m, nn.LeakyReLU)]
    assert len(relus) == 4 and all(r.negative_slope == 0.2 for r in relus)
    layers = list(disc.layers)
    for i in range(4):  # each of the first four convs is followed by its LeakyReLU
        assert isinstance(layers[2 * i], nn.Conv2d) and isinstance(layers[2 * i + 1], nn.LeakyReLU)


def test_discriminator_width_scales_every_layer() -> None:
    """model.discriminator_width: 32 halves every layer (the CPU demo's lighter D)."""
    disc = Discriminator(in_channels=6, num_outputs=3, width=32)
    convs = [m for m in disc.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 64, 128, 256, 3]
    assert disc(torch.randn(1, 6, 64, 64)).shape == (1, 3, 64, 64)


@pytest.mark.parametrize("size", [(64, 64), (96, 128)])
def test_discriminator_output_upsampled_to_input(size) -> None:
    disc = Discriminator(in_channels=1, num_outputs=1)
    assert disc(torch.randn(2, 1, *size)).shape == (2, 1, *size)


@pytest.mark.parametrize("size", [(64, 64), (72, 104)])
def test_seg_skip_head_shapes_and_fused_quarter_features(size) -> None:
    """model.seg_skip: a DeepLabV3+-style decoder on the 1/4 features after the PSP module."""
    torch.manual_seed(0)
    net = MultiTaskNet("resnet18", 4, 6, ("seg", "height"), None, 16, seg_skip=True).eval()
    head = net.heads["seg"]
    assert head.skip is not None and head.decoder is not None
    assert head.skip[0].in_channels == net.encoder.out_channels[2]  # the 1/4 stage
    assert head.classifier.in_channels == 64
    plain = MultiTaskNet("resnet18", 4, 6, ("seg", "height"), None, 16).eval()
    assert plain.heads["seg"].skip is None and plain.heads["seg"].classifier.in_channels == 512
    assert "seg_skip" not in plain.config() and net.config()["seg_skip"] is True
    x = torch.randn(2, 4, *size)
    with torch.no_grad():
        out = net(x)
    assert out["seg"].shape == (2, 6, *size) and out["height"].shape == (2, 1, *size)
    # the logits depend on the 1/4 features: changing them changes the output
    feats = net.encoder(x)
    with torch.no_grad():
        a = head(feats[-1], size, skip=feats[2])
        b = head(feats[-1], size, skip=feats[2] + 1.0)
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match="skip="):
        head(feats[-1], size)


def test_seg_skip_gradients_reach_decoder_and_early_encoder() -> None:
    torch.manual_seed(0)
    net = MultiTaskNet("resnet18", 3, 6, ("seg",), None, 16, seg_skip=True).train()
    net(torch.randn(2, 3, 64, 64))["seg"].logsumexp(1).mean().backward()
    head = net.heads["seg"]
    for module in (head.skip, head.decoder, head.fuse, net.encoder.layer1, net.encoder.layer4):
        grads = [p.grad for p in module.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        assert sum(float(g.abs().sum()) for g in grads) > 0


def test_seg_channels_narrow_the_psp_fusion_and_the_skip_decoder() -> None:
    """model.seg_channels: the PSP fusion convolution's width, which the decoder reads."""
    net = MultiTaskNet("resnet18", 3, 6, ("seg",), None, 32, seg_skip=True, seg_channels=96)
    head = net.heads["seg"]
    assert head.fuse[0].out_channels == 96
    assert head.decoder[0][0].in_channels == 96 + 48  # fused deep features + 1/4 skip
    assert net.config()["seg_channels"] == 96
    assert "seg_channels" not in MultiTaskNet("resnet18", tasks=("seg",)).config()
    assert MultiTaskNet("resnet18", tasks=("seg",)).heads["seg"].fuse[0].out_channels == 512
    with torch.no_grad():
        assert net.eval()(torch.randn(1, 3, 64, 72))["seg"].shape == (1, 6, 64, 72)


def test_height_channels_narrow_the_height_head() -> None:
    """model.height_channels: the head's first convolution and its halving stages."""
    net = MultiTaskNet("resnet18", 3, 6, ("seg", "height"), None, 16, height_channels=128)
    head = net.heads["height"]
    assert head.reduce[0].out_channels == 128 and head.skip[0].out_channels == 32
    assert [s[0].out_channels for s in head.stages] == [80, 40]  # (128 + 32) halved twice
    assert net.config()["height_channels"] == 128
    assert "height_channels" not in MultiTaskNet("resnet18", tasks=("height",)).config()
    with torch.no_grad():
        assert net.eval()(torch.randn(1, 3, 64, 72))["height"].shape == (1, 1, 64, 72)
