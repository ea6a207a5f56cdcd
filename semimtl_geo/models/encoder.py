"""Shared encoder E of the SemiMTL generator (paper section 3.4).

A segmentation-models-pytorch encoder, dilated to output stride 8 as in the paper's
ResNet101 ("dilated ResNet101"), so that the deepest features are at 1/8 of the input.
Weights can be ``None`` (random), ``"imagenet"`` (smp's hub download, needs a network)
or a path to a local ``state_dict`` file.
"""

import contextlib
import socket
from pathlib import Path

import segmentation_models_pytorch as smp
import torch
from safetensors.torch import load_file as load_safetensors
from torch import nn

from semimtl_geo.checkpoint_file import sniff
from semimtl_geo.errors import UserError


@contextlib.contextmanager
def _hub_offline_unless_reachable(host: str = "huggingface.co", timeout: float = 3.0):
    """Switch the Hugging Face hub client to offline mode when the hub cannot be reached.

    Without this, smp retries the download for about 30 s before failing; offline mode
    still uses weights already in the local hub cache.
    """
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        reachable = True
    except OSError:
        reachable = False
    if reachable:
        yield
        return
    import huggingface_hub.constants as hub_constants

    previous = hub_constants.HF_HUB_OFFLINE
    hub_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hub_constants.HF_HUB_OFFLINE = previous


def _available_encoders() -> list[str]:
    return sorted(smp.encoders.get_encoder_names())


def build_encoder(
    name: str = "resnet101",
    in_channels: int = 3,
    weights: str | Path | None = None,
    output_stride: int = 8,
    depth: int = 5,
) -> nn.Module:
    """Create an smp encoder with ``out_channels`` and features at ``1/output_stride``.

    Args:
        name: any smp encoder name, e.g. ``resnet101`` (paper), ``resnet18`` (tests).
        in_channels: number of input bands (3 for IRRG, 4 for RGBIR...).
        weights: ``None``, ``"imagenet"`` or a local file holding the encoder's state dict.
        output_stride: 8 (paper), 16 or 32.
        depth: number of encoder stages (5 for ResNets).

    Raises:
        UserError: unknown encoder name, unreachable hub, unreadable weights file.

    """
    if name not in smp.encoders.get_encoder_names():
        known = ", ".join(
            n
            for n in _available_encoders()
            if n.startswith(("resnet", "efficientnet-b0", "mobilenet"))
        )
        raise UserError(f"Unknown encoder '{name}'; pick an smp encoder name such as {known}.")
    if weights is None or str(weights).lower() in {"none", "null", ""}:
        return smp.encoders.get_encoder(
            name, in_channels=in_channels, depth=depth, weights=None, output_stride=output_stride
        )
    if str(weights) == "imagenet":
        try:
            with _hub_offline_unless_reachable():
                return smp.encoders.get_encoder(
                    name,
                    in_channels=in_channels,
                    depth=depth,
                    weights="imagenet",
                    output_stride=output_stride,
                )
        except Exception as exc:  # network/hub failures surface as many exception types
            raise UserError(
                f"Could not fetch ImageNet weights for encoder '{name}' ({type(exc).__name__}); "
                "with no network, pass a local weights file instead, e.g. "
                "model.encoder_weights=/path/to/resnet101.pth (or null for random weights)."
            ) from None
    path = Path(weights)
    if not path.is_file():
        raise UserError(
            f"Encoder weights file '{path}' does not exist; pass 'imagenet', none, or an existing "
            "local state-dict file."
        )
    encoder = smp.encoders.get_encoder(
        name, in_channels=in_channels, depth=depth, weights=None, output_stride=output_stride
    )
    load_encoder_weights(encoder, path)
    return encoder


def load_encoder_weights(encoder: nn.Module, path: Path) -> None:
    """Load a local state dict (torchvision/timm/smp naming) into ``encoder``.

    A ``.safetensors`` file is read without any unpickling; a ``torch.save`` file goes
    through torch's restricted ``weights_only`` unpickler (tensors and plain containers
    only, never arbitrary objects). Classifier keys (``fc.*``) are dropped; a first
    convolution with a different band count is adapted by repeating/averaging the RGB
    kernels, as smp does for ImageNet.
    """
    try:
        if sniff(path) == "safetensors":
            state = load_safetensors(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt or foreign file
        raise UserError(
            f"Encoder weights file '{path}' could not be read ({type(exc).__name__}); "
            "pass a .safetensors file or a torch state dict saved with "
            "torch.save(model.state_dict(), path)."
        ) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise UserError(f"Encoder weights file '{path}' does not hold a state dict.")
    state = {k.removeprefix("encoder.").removeprefix("module."): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.startswith(("fc.", "classifier.", "head."))}
    own = encoder.state_dict()
    for key, value in list(state.items()):
        if (
            key in own
            and value.ndim == 4
            and own[key].ndim == 4
            and value.shape[1] != own[key].shape[1]
        ):
            state[key] = _adapt_first_conv(value, own[key].shape[1])
    # smp encoders override load_state_dict and return None; call the base method.
    missing, unexpected = nn.Module.load_state_dict(encoder, state, strict=False)
    matched = len(own) - len(missing)
    if matched == 0 or unexpected:
        raise UserError(
            f"Encoder weights file '{path}' does not match the encoder "
            f"({len(unexpected)} unexpected and {len(missing)} missing keys); "
            "check that it was saved from the same architecture."
        )


def _adapt_first_conv(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Adapt a first-layer kernel to another band count (repeat and rescale)."""
    out_c, src_c, kh, kw = weight.shape
    reps = (in_channels + src_c - 1) // src_c
    new = weight.repeat(1, reps, 1, 1)[:, :in_channels]
    return new * (src_c / in_channels)
