"""The SemiMTL generator G = {E; F_seg, F_height} (paper section 3.4, Fig. 2)."""

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from semimtl_geo.errors import UserError
from semimtl_geo.models.encoder import build_encoder
from semimtl_geo.models.heads import HeightHead, PSPSegmentationHead
from semimtl_geo.models.norm import check_domains, check_norm, convert_norm, select_domain
from semimtl_geo.tasks import TASKS, Task

__all__ = ["TASKS", "MultiTaskNet", "Task", "normalise_tasks"]


def normalise_tasks(tasks: str | Sequence[str]) -> tuple[str, ...]:
    """Turn ``"seg"``, ``"both"``, ``["height", "seg"]``... into canonical task order."""
    if isinstance(tasks, str):
        tasks = list(TASKS) if tasks == "both" else [t.strip() for t in tasks.split(",")]
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise UserError(
            f"Unknown task(s) {unknown or tasks}; use 'seg', 'height' or both ('seg,height')."
        )
    return tuple(t for t in TASKS if t in tasks)


class MultiTaskNet(nn.Module):
    """Shared dilated encoder with a PSP segmentation head and a height head.

    ``forward`` returns a dict with ``"seg"`` (class logits, ``B x C x H x W``) and/or
    ``"height"`` (``B x 1 x H x W``), both at the input size. Single-task (STL) models are
    built with ``tasks=("seg",)`` or ``("height",)`` and carry only that head.

    Args:
        encoder_name: smp encoder name (``resnet101`` in the paper).
        in_channels: input bands.
        num_classes: segmentation classes.
        tasks: which heads to build.
        encoder_weights: ``None``, ``"imagenet"`` or a local state-dict file.
        output_stride: encoder output stride (8 = dilated, as in the paper).
        norm: ``"batch"`` (the paper's BatchNorm), ``"group"`` (GroupNorm everywhere: no
            running statistics) or ``"domain"`` (BatchNorm with running statistics per
            training dataset, :class:`~semimtl_geo.models.norm.DomainBatchNorm2d`);
            :mod:`semimtl_geo.models.norm` says when that matters.
        domains: with ``norm="domain"``, the training datasets' names, in order; the first
            is active until :meth:`select_domain` picks another.
        height_channels: channels of the height head's first convolution (halved by each
            up-sampling stage; :class:`~semimtl_geo.models.heads.HeightHead`).
        seg_skip: give the segmentation head a DeepLabV3+-style decoder on the 1/4
            encoder features (:class:`~semimtl_geo.models.heads.PSPSegmentationHead`);
            the paper's PSP head has none (``False``).
        seg_channels: channels of the PSP fusion convolution (512 in PSPNet;
            :class:`~semimtl_geo.models.heads.PSPSegmentationHead`'s ``hidden_channels``).

    """

    def __init__(
        self,
        encoder_name: str = "resnet101",
        in_channels: int = 3,
        num_classes: int = 6,
        tasks: str | Sequence[str] = ("seg", "height"),
        encoder_weights: str | Path | None = None,
        output_stride: int = 8,
        norm: str = "batch",
        domains: Sequence[str] | None = None,
        seg_skip: bool = False,
        height_channels: int = 256,
        seg_channels: int = 512,
    ) -> None:
        super().__init__()
        self.norm = check_norm(norm)
        self.domains = check_domains(norm, domains)
        self.tasks = normalise_tasks(tasks)
        self.encoder_name = encoder_name
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.output_stride = output_stride
        self.seg_skip = bool(seg_skip)
        self.height_channels = int(height_channels)
        self.seg_channels = int(seg_channels)
        self.encoder = build_encoder(
            encoder_name,
            in_channels=in_channels,
            weights=encoder_weights,
            output_stride=output_stride,
        )
        channels = list(self.encoder.out_channels)
        self.heads = nn.ModuleDict()
        if "seg" in self.tasks:
            self.heads["seg"] = PSPSegmentationHead(
                channels[-1], num_classes, hidden_channels=self.seg_channels,
                skip_channels=channels[2] if self.seg_skip else 0,
            )
        if "height" in self.tasks:
            # skip from the 1/4 stage (index 2 in smp's feature list)
            self.heads["height"] = HeightHead(
                channels[-1], skip_channels=channels[2], hidden_channels=self.height_channels
            )
        convert_norm(self, self.norm, len(self.domains))
        self.domain = self.domains[0] if self.domains else None

    def config(self) -> dict:
        """Return the constructor arguments that rebuild this network (stored in checkpoints)."""
        return {
            "encoder_name": self.encoder_name,
            "in_channels": self.in_channels,
            "num_classes": self.num_classes,
            "tasks": list(self.tasks),
            "output_stride": self.output_stride,
            "norm": self.norm,
            **({"domains": list(self.domains)} if self.domains else {}),
            **({"seg_skip": True} if self.seg_skip else {}),
            **({"height_channels": self.height_channels} if self.height_channels != 256 else {}),
            **({"seg_channels": self.seg_channels} if self.seg_channels != 512 else {}),
        }

    def select_domain(self, name: str | None) -> str | None:
        """Use dataset ``name``'s normalisation statistics (``norm="domain"`` models).

        ``None`` selects the first training dataset. Models with other normalisations have
        no per-dataset statistics: for them this does nothing and returns ``None``.

        Returns:
            the active domain.

        Raises:
            UserError: a name that is not one of the model's training datasets.

        """
        if not self.domains:
            return None
        name = self.domains[0] if name is None else name
        if name not in self.domains:
            raise UserError(
                f"This model has normalisation statistics for the datasets "
                f"{', '.join(self.domains)}, not '{name}'; pick one of those."
            )
        select_domain(self, self.domains.index(name))
        self.domain = name
        return name

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Predict every task of the model for a ``B x in_channels x H x W`` batch."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"MultiTaskNet expects B x {self.in_channels} x H x W input, got {tuple(x.shape)}."
            )
        size = (x.shape[-2], x.shape[-1])
        features = self.encoder(x)
        out: dict[str, torch.Tensor] = {}
        if "seg" in self.heads:
            out["seg"] = self.heads["seg"](features[-1], size, skip=features[2])
        if "height" in self.heads:
            out["height"] = self.heads["height"](features[-1], size, skip=features[2])
        return out
