"""Task decoders F_t of the SemiMTL generator (paper section 3.4).

* Segmentation: the PSP pyramid pooling module (bins 1, 2, 3, 6) on the deepest
  features, a 1x1 classifier, bilinear up-sampling to the input size; optionally
  (``skip_channels``) a DeepLabV3+-style decoder that fuses the 1/4-resolution encoder
  features before the classifier, so that objects narrower than one deep feature cell
  (cars at output stride 16) can be resolved.
* Height/depth: a few 3x3 convolutions with 2x up-sampling steps, then a 1-channel
  regression layer, bilinear up-sampling to the input size.
"""

import torch
import torch.nn.functional as F
from torch import nn


class _PSPBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, pool_size: int) -> None:
        super().__init__()
        self.pool_size = pool_size
        self.pool = nn.AdaptiveAvgPool2d(pool_size)
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels) if pool_size > 1 else nn.Identity(),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        y = self.conv(self.pool(x))
        return F.interpolate(y, size=(h, w), mode="bilinear", align_corners=False)


class PSPSegmentationHead(nn.Module):
    """Pyramid scene parsing module + classifier, output at the input image size.

    Args:
        in_channels: channels of the deepest encoder feature map.
        num_classes: number of semantic classes (logits out).
        hidden_channels: channels after the PSP fusion convolution (512 in PSPNet).
        bins: pooling grid sizes of the pyramid (1, 2, 3, 6 in PSPNet).
        dropout: dropout before the classifier.
        skip_channels: channels of a shallower (1/4) encoder stage to fuse, as in
            DeepLabV3+ (Chen et al., ECCV 2018, section 3.2: the low-level features
            reduced by a 1x1 convolution to 48 channels, concatenated with the up-sampled
            deep features, refined by 3x3 convolutions); 0 = the plain PSP head.
        decoder_channels: channels of that decoder's 3x3 convolutions (DeepLabV3+: 256;
            64 here: about 5 % more CPU per ResNet18 step at 96 px, 128 costs about 20 %).

    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        hidden_channels: int = 512,
        bins: tuple[int, ...] = (1, 2, 3, 6),
        dropout: float = 0.1,
        skip_channels: int = 0,
        decoder_channels: int = 64,
    ) -> None:
        super().__init__()
        branch = max(in_channels // len(bins), 16)
        self.blocks = nn.ModuleList(_PSPBlock(in_channels, branch, b) for b in bins)
        self.fuse = nn.Sequential(
            nn.Conv2d(in_channels + branch * len(bins), hidden_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(hidden_channels),
            nn.ReLU(inplace=True),
            nn.Dropout2d(dropout),
        )
        self.skip: nn.Module | None = None
        self.decoder: nn.Module | None = None
        if skip_channels:
            self.skip = _conv_bn_relu(skip_channels, 48, 1)
            self.decoder = nn.Sequential(
                _conv_bn_relu(hidden_channels + 48, decoder_channels, 3),
                _conv_bn_relu(decoder_channels, decoder_channels, 3),
            )
            hidden_channels = decoder_channels
        self.classifier = nn.Conv2d(hidden_channels, num_classes, 1)

    def forward(
        self, features: torch.Tensor, size: tuple[int, int], skip: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Return class logits ``(B, num_classes, *size)``.

        ``skip`` (the 1/4 encoder features) is required when the head was built with
        ``skip_channels`` and ignored otherwise.
        """
        x = torch.cat([features, *(blk(features) for blk in self.blocks)], dim=1)
        x = self.fuse(x)
        if self.skip is not None and self.decoder is not None:
            if skip is None:
                raise ValueError("This segmentation head fuses 1/4 features; pass skip=.")
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = self.decoder(torch.cat([x, self.skip(skip)], dim=1))
        logits = self.classifier(x)
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def _conv_bn_relu(in_channels: int, out_channels: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class HeightHead(nn.Module):
    """Convolutions with up-sampling and a 1-channel regression layer.

    The deepest features (1/8 with the dilated encoder) are reduced, then refined
    through ``num_upsamples`` (conv, BN, ReLU, 2x bilinear) stages, and regressed.
    A skip from a shallower encoder stage (1/4) adds detail when provided.
    """

    def __init__(
        self,
        in_channels: int,
        skip_channels: int = 0,
        hidden_channels: int = 256,
        num_upsamples: int = 2,
    ) -> None:
        super().__init__()
        self.reduce = nn.Sequential(
            nn.Conv2d(in_channels, hidden_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(hidden_channels),
            nn.ReLU(inplace=True),
        )
        self.skip = (
            nn.Sequential(
                nn.Conv2d(skip_channels, hidden_channels // 4, 1, bias=False),
                nn.BatchNorm2d(hidden_channels // 4),
                nn.ReLU(inplace=True),
            )
            if skip_channels
            else None
        )
        stages = []
        ch = hidden_channels + (hidden_channels // 4 if skip_channels else 0)
        for _ in range(num_upsamples):
            out = max(ch // 2, 32)
            stages.append(
                nn.Sequential(
                    nn.Conv2d(ch, out, 3, padding=1, bias=False),
                    nn.BatchNorm2d(out),
                    nn.ReLU(inplace=True),
                )
            )
            ch = out
        self.stages = nn.ModuleList(stages)
        self.regressor = nn.Conv2d(ch, 1, 3, padding=1)

    def forward(
        self, features: torch.Tensor, size: tuple[int, int], skip: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Return height ``(B, 1, *size)`` (unbounded regression, nDSM units)."""
        x = self.reduce(features)
        if self.skip is not None and skip is not None:
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = torch.cat([x, self.skip(skip)], dim=1)
        for stage in self.stages:
            x = stage(x)
            x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        out = self.regressor(x)
        return F.interpolate(out, size=size, mode="bilinear", align_corners=False)
