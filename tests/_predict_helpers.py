"""Tiny fixtures for the predict tests: checkpoints, rasters and a stub network."""

from pathlib import Path

import numpy as np
import rasterio
import torch
from affine import Affine
from torch import nn

from semimtl_geo.checkpoint import LoadedModel, ModelMeta, save_model_checkpoint
from semimtl_geo.classes import ISPRS_CLASSES
from semimtl_geo.models import MultiTaskNet

UTM33 = "EPSG:32633"


def tiny_checkpoint(path: Path, *, gsd: float | None = None, seed: int = 0,
                    patch_size: int = 64, overlap: float = 0.5, output_stride: int = 32) -> Path:
    """A random-init resnet18 two-task checkpoint (3 bands, 6 ISPRS classes).

    Output stride 32 (not the paper's dilated 8) keeps the tests fast on two CPU cores.
    """
    torch.manual_seed(seed)
    model = MultiTaskNet("resnet18", in_channels=3, num_classes=6, tasks=("seg", "height"),
                         encoder_weights=None, output_stride=output_stride).eval()
    meta = ModelMeta(classes=ISPRS_CLASSES, bands=["R", "G", "B"], mean=[0.5] * 3,
                     std=[0.25] * 3, gsd=gsd, height_scale=30.0, height_unit="m",
                     patch_size=patch_size, overlap=overlap)
    return save_model_checkpoint(path, model, meta, {})


def write_raster(path: Path, data: np.ndarray, *, crs: str | None = UTM33,
                 transform: Affine | None = None, nodata: float | None = None,
                 colorinterp: list | None = None, mask: np.ndarray | None = None,
                 descriptions: list[str] | None = None) -> Path:
    """Write ``C x H x W`` data as a GeoTIFF (optionally alpha, internal mask, nodata)."""
    count, height, width = data.shape
    profile = {"driver": "GTiff", "width": width, "height": height, "count": count,
               "dtype": data.dtype.name, "crs": crs,
               "transform": transform or Affine(0.09, 0, 500000.0, 0, -0.09, 5800000.0),
               "nodata": nodata, "photometric": "MINISBLACK"}
    env = rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True)
    with env, rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        if colorinterp is not None:
            dst.colorinterp = colorinterp
        if mask is not None:
            dst.write_mask(mask.astype(np.uint8) * 255)
        for i, desc in enumerate(descriptions or []):
            dst.set_band_description(i + 1, desc)
    return path


def textured(height: int, width: int, seed: int = 1, count: int = 3) -> np.ndarray:
    """Smooth random uint8 texture in [40, 220] (no pixel equals 0)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    bands = []
    for b in range(count):
        f1, f2, ph = rng.uniform(0.02, 0.15, 3)
        bands.append(130 + 90 * np.sin(f1 * xx + ph * 10 + b) * np.cos(f2 * yy + b))
    return np.clip(np.stack(bands), 40, 220).astype(np.uint8)


class StubNet(nn.Module):
    """A pixel-wise 'network' whose outputs are the input itself.

    ``height`` = normalised band 0 (so metres = band0_norm x height_scale) and class
    logits rank band 0 into thresholds, which makes alignment checks exact. Every input
    batch is recorded in :attr:`seen`.
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 6) -> None:
        super().__init__()
        self.tasks = ("seg", "height")
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.seen: list[torch.Tensor] = []
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        self.seen.append(x.detach().clone())
        centres = torch.linspace(-2, 2, self.num_classes, device=x.device).view(1, -1, 1, 1)
        logits = -10 * (x[:, :1] - centres) ** 2
        return {"seg": logits, "height": x[:, :1].clone()}


def stub_loaded(gsd: float | None = 0.09, patch_size: int = 64, overlap: float = 0.5
                ) -> LoadedModel:
    meta = ModelMeta(classes=ISPRS_CLASSES, bands=["R", "G", "B"], mean=[0.5] * 3,
                     std=[0.25] * 3, gsd=gsd, height_scale=1.0, patch_size=patch_size,
                     overlap=overlap)
    return LoadedModel(StubNet(), meta, {})
