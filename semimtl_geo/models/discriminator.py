"""Task discriminator D_t (paper section 3.4, after Radford et al. / AdaptSegNet).

Five 4x4 convolutions with stride 2 and 64, 128, 256, 512, ``num_outputs`` channels;
spectral normalisation and LeakyReLU(0.2) after each of the first four; the per-pixel
``num_outputs``-way logits are up-sampled to the input size. For SemiMTL,
``num_outputs = K + 1`` (class 0 = ground truth, class k = prediction of dataset k,
eq. 2); for SemiSD and DA it is 1 (binary, sigmoid logit).
"""

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

DISCRIMINATOR_CHANNELS = (64, 128, 256, 512)


class Discriminator(nn.Module):
    """Fully convolutional output-space discriminator.

    Args:
        in_channels: channels of the map to judge (number of classes for seg, 1 for height).
        num_outputs: logits per pixel (K + 1 for SemiMTL, 1 for binary variants).
        width: channels of the first convolution, doubled by each of the next three (64 =
            the paper's 64, 128, 256, 512; 32 costs about a fifth of the CPU time, what
            the CPU demo uses).

    """

    def __init__(self, in_channels: int, num_outputs: int, width: int = 64) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.num_outputs = num_outputs
        self.width = width
        layers: list[nn.Module] = []
        prev = in_channels
        for ch in (width * c // DISCRIMINATOR_CHANNELS[0] for c in DISCRIMINATOR_CHANNELS):
            layers.append(spectral_norm(nn.Conv2d(prev, ch, kernel_size=4, stride=2, padding=1)))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            prev = ch
        layers.append(nn.Conv2d(prev, num_outputs, kernel_size=4, stride=2, padding=1))
        self.layers = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Return per-pixel logits ``B x num_outputs x H x W`` at the input size."""
        logits = self.layers(z)
        return F.interpolate(logits, size=z.shape[-2:], mode="bilinear", align_corners=False)
