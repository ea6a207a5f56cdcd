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

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from semimtl_geo.errors import UserError

Norm = Literal["batch", "group", "domain"]

#: Normalisations the generator can be built with (``model.norm``; ``batch`` = paper).
NORMS: tuple[str, ...] = ("batch", "group", "domain")

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
            "(model.norm: batch is the paper's BatchNorm, group is GroupNorm, domain is "
            "BatchNorm with running statistics per training dataset)."
        )
    return norm


def convert_norm(module: nn.Module, norm: str, domains: int = 1) -> nn.Module:
    """Replace the ``BatchNorm2d`` layers of ``module`` in place according to ``norm``.

    ``batch`` leaves the module unchanged. ``group`` puts a ``GroupNorm`` with the same
    channel count in place of every ``BatchNorm2d``; ``domain`` a
    :class:`DomainBatchNorm2d` with ``domains`` sets of running statistics. Their affine
    weight and bias start from the BatchNorm's (a pretrained encoder keeps its learnt
    scales and shifts; ``domain`` also starts every set of statistics from its running ones).

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
            new = _group_norm_like(child) if norm == "group" else DomainBatchNorm2d.like(
                child, domains
            )
            setattr(module, name, new)
        elif isinstance(child, nn.modules.batchnorm._BatchNorm):
            raise UserError(
                f"model.norm={norm} cannot replace the {type(child).__name__} layers of this "
                "encoder; use an encoder with plain BatchNorm2d layers (the ResNets) or "
                "model.norm=batch."
            )
        else:
            convert_norm(child, norm, domains)
    return module


def _group_norm_like(bn: nn.BatchNorm2d) -> nn.GroupNorm:
    channels = bn.num_features
    gn = nn.GroupNorm(group_count(channels), channels, eps=bn.eps, affine=bn.affine)
    if bn.affine:
        gn.weight.data.copy_(bn.weight.data)
        gn.bias.data.copy_(bn.bias.data)
    return gn.to(device=bn.weight.device if bn.affine else None)


class DomainBatchNorm2d(nn.Module):
    """BatchNorm with one set of running statistics per domain (dataset).

    Domain-specific BatchNorm (Chang et al., "Domain-Specific Batch Normalization for
    Unsupervised Domain Adaptation", CVPR 2019): the affine weight and bias are shared,
    the running mean and variance are kept per domain. In training a batch is normalised
    with its own statistics (as ``BatchNorm2d`` does) and they update the running
    statistics of the active domain only; in eval mode the active domain's running
    statistics are used. Algorithm 1 forwards each dataset's mini-batch on its own, so
    this keeps exactly the statistics each dataset was trained with, where one shared set
    would blend them. Select the domain with :meth:`MultiTaskNet.select_domain`.

    Args:
        num_features: channels.
        domains: number of domains (sets of running statistics).
        eps: added to the variance.
        momentum: running-average factor (BatchNorm's 0.1).

    """

    def __init__(
        self, num_features: int, domains: int, eps: float = 1e-5, momentum: float = 0.1
    ) -> None:
        super().__init__()
        if domains < 1:
            raise ValueError("DomainBatchNorm2d needs at least one domain.")
        self.num_features = num_features
        self.domains = domains
        self.eps = eps
        self.momentum = momentum
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(domains, num_features))
        self.register_buffer("running_var", torch.ones(domains, num_features))
        #: index of the active domain (not saved: chosen by whoever runs the model)
        self.domain = 0

    @classmethod
    def like(cls, bn: nn.BatchNorm2d, domains: int) -> "DomainBatchNorm2d":
        """Return a domain BatchNorm with ``bn``'s parameters and statistics in every domain."""
        new = cls(bn.num_features, domains, eps=bn.eps, momentum=bn.momentum or 0.1)
        with torch.no_grad():
            if bn.affine:
                new.weight.copy_(bn.weight)
                new.bias.copy_(bn.bias)
            if bn.running_mean is not None and bn.running_var is not None:
                new.running_mean.copy_(bn.running_mean.expand(domains, -1))
                new.running_var.copy_(bn.running_var.expand(domains, -1))
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise with the batch's statistics (training) or the active domain's (eval)."""
        d = self.domain
        # Rows of the (domains, C) buffers: batch_norm updates the row in place in training.
        return F.batch_norm(
            x, self.running_mean[d], self.running_var[d], self.weight, self.bias,
            self.training, self.momentum, self.eps,
        )

    def extra_repr(self) -> str:
        """Shown by ``print(module)``."""
        return f"{self.num_features}, domains={self.domains}, eps={self.eps}"


def select_domain(module: nn.Module, index: int) -> None:
    """Make domain ``index`` active in every :class:`DomainBatchNorm2d` of ``module``."""
    for mod in module.modules():
        if isinstance(mod, DomainBatchNorm2d):
            if not 0 <= index < mod.domains:
                raise IndexError(f"domain {index} out of range 0..{mod.domains - 1}")
            mod.domain = index


def check_domains(norm: str, domains: Sequence[str] | None) -> tuple[str, ...]:
    """Validate the domain names of a ``norm`` model (only ``domain`` has any)."""
    if norm != "domain":
        if domains:
            raise UserError(f"model.norm={norm} keeps no statistics per dataset; drop the domains.")
        return ()
    names = tuple(domains or ())
    if not names or len(set(names)) != len(names) or not all(
        isinstance(n, str) and n for n in names
    ):
        raise UserError(
            "model.norm=domain needs the names of the training datasets, each once "
            f"(got {list(names)})."
        )
    return names
