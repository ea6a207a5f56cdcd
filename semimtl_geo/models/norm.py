"""Normalisation layers of the generator: BatchNorm (the paper's) or GroupNorm.

The paper's network (section 3.4, a dilated ResNet101 with PSP and height heads) uses
BatchNorm. Algorithm 1 forwards each dataset's mini-batch through G on its own, so in
training every BatchNorm layer normalises Potsdam crops with Potsdam statistics and
Vaihingen crops with Vaihingen statistics, while its running averages, which eval mode
uses at test time, blend both datasets and match neither. With an ImageNet-initialised
encoder and tens of thousands of iterations this matters little; a network trained from a
random initialisation for a few hundred iterations depends on the per-dataset
normalisation everywhere, and its eval-mode predictions collapse (README, "The two
commands": the same checkpoint scores building IoU 17 with the running averages and 80
with each test tile's own statistics).

``norm="group"`` replaces every ``BatchNorm2d`` by a ``GroupNorm`` (Wu & He, ECCV 2018:
32 groups, or the largest divisor of the channel count below that). GroupNorm normalises
each sample with its own statistics, in training and at test time alike, so there are no
running statistics to disagree with either dataset, the output of a sample does not
depend on the rest of its batch, and the checkpoint, ``predict``, the ONNX export and the
QGIS plugins need nothing new (no dataset has to be named at prediction time).
"""

from typing import Literal

from torch import nn

from semimtl_geo.errors import UserError

Norm = Literal["batch", "group"]

#: Normalisations the generator can be built with (``model.norm``; ``batch`` = paper).
NORMS: tuple[str, ...] = ("batch", "group")

#: GroupNorm's group count (Wu & He's default).
MAX_GROUPS = 32


def group_count(channels: int, max_groups: int = MAX_GROUPS) -> int:
    """Return the largest divisor of ``channels`` that is at most ``max_groups``."""
    for groups in range(min(max_groups, channels), 0, -1):
        if channels % groups == 0:
            return groups
    return 1


def check_norm(norm: str) -> str:
    """Return ``norm`` if it is a known normalisation, else raise a :class:`UserError`."""
    if norm not in NORMS:
        raise UserError(
            f"Unknown normalisation '{norm}'; use one of {', '.join(NORMS)} "
            "(model.norm: batch is the paper's BatchNorm, group is GroupNorm)."
        )
    return norm


def convert_norm(module: nn.Module, norm: str) -> nn.Module:
    """Replace the ``BatchNorm2d`` layers of ``module`` in place according to ``norm``.

    ``batch`` leaves the module unchanged. ``group`` puts a ``GroupNorm`` with the same
    channel count in place of every ``BatchNorm2d``; its affine weight and bias start from
    the BatchNorm's (so a pretrained encoder keeps its learnt scales and shifts).

    Raises:
        UserError: an unknown ``norm``, or a BatchNorm subclass (e.g. timm's
            ``BatchNormAct2d``, which also applies an activation) that GroupNorm cannot
            stand in for.

    """
    check_norm(norm)
    if norm == "batch":
        return module
    for name, child in list(module.named_children()):
        if type(child) is nn.BatchNorm2d:
            setattr(module, name, _group_norm_like(child))
        elif isinstance(child, nn.modules.batchnorm._BatchNorm):
            raise UserError(
                f"model.norm=group cannot replace the {type(child).__name__} layers of this "
                "encoder; use an encoder with plain BatchNorm2d layers (the ResNets) or "
                "model.norm=batch."
            )
        else:
            convert_norm(child, norm)
    return module


def _group_norm_like(bn: nn.BatchNorm2d) -> nn.GroupNorm:
    channels = bn.num_features
    gn = nn.GroupNorm(group_count(channels), channels, eps=bn.eps, affine=bn.affine)
    if bn.affine:
        gn.weight.data.copy_(bn.weight.data)
        gn.bias.data.copy_(bn.bias.data)
    return gn.to(device=bn.weight.device if bn.affine else None)
