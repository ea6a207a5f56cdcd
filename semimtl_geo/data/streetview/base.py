"""Shared machinery of the street-view datasets (Cityscapes, Cityscapes-depth, Synscapes).

The paper (section 4.1) resizes every street-view image to 512x1024, trains on random
crops (256x256 in the cross-city setting) with random flips, and regresses *inverse*
depth so that points at infinity (the sky) are 0. This module holds what the dataset
modules share:

* reading PNG images and label-id maps (the Cityscapes label-id -> train-id table both
  datasets use is :mod:`semimtl_geo.data.cityscapes.facts`);
* resizing (image bilinear; labels and depth nearest, so no invalid pixel is blended
  into a valid one), random crops and horizontal flips;
* the depth target: ``"depth"`` (``height = depth_m / depth_scale``) or
  ``"inverse_depth"`` (``height = depth_scale / depth_m``, sky and infinity = 0);
  :func:`height_to_metres` inverts either;
* :class:`StreetViewDataset`, a torchgeo :class:`~torchgeo.datasets.NonGeoDataset` base
  whose ``__getitem__`` yields the shared training sample dict and whose
  :meth:`StreetViewDataset.iter_eval` yields full resized frames for evaluation.

Depth unit: metres, everywhere a depth is not normalised.
"""

import abc
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torchgeo.datasets import NonGeoDataset

from semimtl_geo.classes import CITYSCAPES_CLASSES
from semimtl_geo.errors import UserError
from semimtl_geo.tasks import TASKS

DepthTarget = Literal["depth", "inverse_depth"]
DEPTH_TARGETS: tuple[str, ...] = ("depth", "inverse_depth")

#: ImageNet statistics on pixel / 255, the usual choice for RGB street-view images.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: The paper's working resolution (rows, columns).
PAPER_SIZE = (512, 1024)

def depth_to_target(
    depth_m: np.ndarray,
    target: DepthTarget = "depth",
    scale: float = 10.0,
    sky: np.ndarray | None = None,
) -> np.ndarray:
    """Turn a metric depth map (NaN = unknown) into the normalised training target.

    Args:
        depth_m: depth in metres; NaN or non-positive = unknown, +inf = infinitely far.
        target: ``"depth"``: ``depth_m / scale``; ``"inverse_depth"``: ``scale / depth_m``
            (the paper's target, so that infinity is 0).
        scale: metres per target unit (the checkpoint's ``height_scale``).
        sky: optional boolean mask of sky pixels: 0 for the inverse target (the paper's
            convention), NaN (undefined) for the depth target.

    Returns:
        float32 array, NaN where there is no usable reference.

    """
    if target not in DEPTH_TARGETS:
        raise UserError(f"Unknown depth target '{target}'; use one of {list(DEPTH_TARGETS)}.")
    d = np.asarray(depth_m, dtype=np.float64)
    out = np.full(d.shape, np.nan, dtype=np.float64)
    if target == "depth":
        ok = np.isfinite(d) & (d > 0)
        out[ok] = d[ok] / scale
        if sky is not None:
            out[sky] = np.nan
    else:
        ok = (d > 0) & ~np.isnan(d)  # +inf -> 0
        out[ok] = scale / d[ok]
        if sky is not None:
            out[sky] = 0.0
    return out.astype(np.float32)


def height_to_metres(
    height: np.ndarray | Tensor, target: DepthTarget = "depth", scale: float = 10.0
) -> np.ndarray | Tensor:
    """Invert :func:`depth_to_target`: normalised prediction -> depth in metres.

    For the inverse target, values ``<= 0`` mean "infinitely far" and become ``+inf``
    (the metrics then count them as failures wherever the reference is finite).
    """
    if target == "depth":
        return height * scale
    if target != "inverse_depth":
        raise UserError(f"Unknown depth target '{target}'; use one of {list(DEPTH_TARGETS)}.")
    if isinstance(height, Tensor):
        h = height.float()
        return torch.where(h > 0, scale / h.clamp_min(1e-12), torch.full_like(h, float("inf")))
    h = np.asarray(height, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return np.where(h > 0, scale / np.where(h > 0, h, 1.0), np.inf).astype(np.float32)


def read_rgb(path: Path) -> np.ndarray:
    """Read an 8-bit RGB PNG as ``H x W x 3`` uint8."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


def read_png_array(path: Path) -> np.ndarray:
    """Read a single-channel PNG (8- or 16-bit) without any conversion."""
    with Image.open(path) as im:
        return np.asarray(im)


def nearest_resize(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a 2-D array to ``size`` = (rows, cols), any dtype.

    Pixel centres are mapped exactly (``src = floor((dst + 0.5) * in / out)``), so labels and
    NaN depths are copied, never blended.
    """
    h, w = arr.shape[:2]
    if (h, w) == tuple(size):
        return arr
    rows = np.minimum(((np.arange(size[0]) + 0.5) * h / size[0]).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(size[1]) + 0.5) * w / size[1]).astype(np.int64), w - 1)
    return arr[rows[:, None], cols[None, :]]


def bilinear_resize_rgb(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of an ``H x W x 3`` uint8 image to ``size`` = (rows, cols)."""
    if image.shape[:2] == tuple(size):
        return image
    pil = Image.fromarray(image).resize((size[1], size[0]), Image.Resampling.BILINEAR)
    return np.asarray(pil, dtype=np.uint8)


def _pair(value: int | Sequence[int] | None) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, int):
        return (value, value)
    rows, cols = (int(v) for v in value)
    return (rows, cols)


def require_folder(path: Path, what: str, hint: str) -> Path:
    """Raise a :class:`UserError` naming ``path`` when it is not a folder."""
    if not path.is_dir():
        raise UserError(f"{what} folder {path} is missing; {hint}")
    return path


def check_root_and_split(
    dataset: str, root: str | Path, split: str, splits: Sequence[str]
) -> Path:
    """Validate a dataset root folder and split name; return the root as a Path."""
    if split not in splits:
        raise UserError(f"Unknown {dataset} split '{split}'; use one of {list(splits)}.")
    path = Path(root)
    if not path.is_dir():
        raise UserError(f"{dataset} root {path} does not exist; check the path.")
    return path


@dataclass(frozen=True)
class Frame:
    """One frame at native resolution, as read from disk."""

    image: np.ndarray  # H x W x 3 uint8
    mask: np.ndarray | None  # H x W int64 train ids, 255 = ignore
    depth: np.ndarray | None  # H x W float metres, NaN unknown, +inf infinitely far
    sky: np.ndarray | None  # H x W bool, known sky pixels (for the inverse target)


class StreetViewDataset(NonGeoDataset, abc.ABC):
    """Base of the street-view datasets: resize, crop, flip, normalise, depth target.

    Subclasses list their frames in ``self.ids`` and implement :meth:`_read_frame`.

    Args:
        tasks: which labels to return, a subset of ``("seg", "height")`` (empty: images
            only, for an unlabelled domain).
        size: (rows, cols) every frame is resized to first; ``None`` keeps the native size.
        crop_size: random crop (int or (rows, cols)) applied after resizing; ``None`` = none.
        flip: random horizontal flips (p = 0.5).
        scale_range: ``(low, high)``: each random crop covers ``crop_size / s`` px of the
            resized frame for a scale ``s`` drawn uniformly from the range and is resized
            to ``crop_size`` (PSPNet's random scaling, the paper's augmentation "following
            [65]"; image bilinear, labels and depth nearest, depth values unchanged);
            ``None`` = no scaling. Needs ``crop_size``.
        depth_target: ``"depth"`` or ``"inverse_depth"`` (see :func:`depth_to_target`).
        depth_scale: metres per target unit.
        max_depth: depths beyond this many metres are treated as unknown (``None`` keeps all).
        mean: per-channel mean on pixel / 255.
        std: per-channel standard deviation on pixel / 255.

    """

    classes = CITYSCAPES_CLASSES
    all_bands = ("R", "G", "B")
    rgb_bands = ("R", "G", "B")
    ids: list[str]

    def __init__(
        self,
        tasks: Sequence[str] = ("seg", "height"),
        size: Sequence[int] | None = PAPER_SIZE,
        crop_size: int | Sequence[int] | None = None,
        flip: bool = False,
        depth_target: DepthTarget = "depth",
        depth_scale: float = 10.0,
        max_depth: float | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        scale_range: Sequence[float] | None = None,
    ) -> None:
        tasks = tuple(tasks)
        unknown = [t for t in tasks if t not in TASKS]
        if unknown:
            raise UserError(f"Unknown task(s) {unknown}; use 'seg' and/or 'height' (or none).")
        if depth_target not in DEPTH_TARGETS:
            raise UserError(
                f"Unknown depth target '{depth_target}'; use one of {list(DEPTH_TARGETS)}."
            )
        if depth_scale <= 0:
            raise UserError(f"depth_scale must be positive (metres per unit), got {depth_scale}.")
        self.tasks = tasks
        self.size = _pair(size)
        self.crop_size = _pair(crop_size)
        self.flip = bool(flip)
        self.scale_range = None if scale_range is None else (
            float(scale_range[0]), float(scale_range[1]))
        self.depth_target: DepthTarget = depth_target
        self.depth_scale = float(depth_scale)
        self.max_depth = max_depth
        self.mean = torch.tensor(list(mean), dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(list(std), dtype=torch.float32).view(-1, 1, 1)

    @abc.abstractmethod
    def _read_frame(self, index: int, tasks: tuple[str, ...]) -> Frame:
        """Read frame ``index`` at native resolution with the labels for ``tasks``."""

    def __len__(self) -> int:
        """Return the number of frames."""
        return len(self.ids)

    def _nearest(self, arr: np.ndarray) -> np.ndarray:
        """Nearest-resize a raw label/disparity/depth map to ``size`` (no-op without one).

        Subclasses call this on raw maps before converting them pixel by pixel: for a
        pixel-wise conversion, converting then resizing gives the same result, on 4x
        fewer pixels at the paper's half resolution.
        """
        return arr if self.size is None else nearest_resize(arr, self.size)

    def _resized(self, index: int, tasks: tuple[str, ...]) -> Frame:
        frame = self._read_frame(index, tasks)
        image, mask, depth, sky = frame.image, frame.mask, frame.depth, frame.sky
        if self.size is not None:
            image = bilinear_resize_rgb(image, self.size)
            mask = None if mask is None else nearest_resize(mask, self.size)
            depth = None if depth is None else nearest_resize(depth, self.size)
            sky = None if sky is None else nearest_resize(sky, self.size)
        if depth is not None and self.max_depth is not None:
            depth = np.where(depth > self.max_depth, np.nan, depth)
        return Frame(image, mask, depth, sky)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        """Return the training sample dict (normalised image, ``mask``, ``height``).

        ``image``: float32 ``3 x H x W``, ``(pixel / 255 - mean) / std``; ``mask``: int64
        ``H x W`` train ids, 255 = ignore; ``height``: float32 ``H x W`` normalised depth
        target, NaN = no reference. A key is absent when its task is not requested. The
        random crop and flip draw from torch's RNG (seeded per DataLoader worker); use
        :meth:`sample` for an explicit generator.
        """
        seed = int(torch.randint(0, 2**62, ()).item())
        return self.sample(index, np.random.default_rng(seed))

    def sample(self, index: int, rng: np.random.Generator) -> dict[str, Tensor]:
        """Return the training sample of frame ``index``, augmented with ``rng``."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} frames")
        frame = self._resized(index, self.tasks)
        image, mask, depth, sky = frame.image, frame.mask, frame.depth, frame.sky
        if self.crop_size is not None:
            ch, cw = self.crop_size
            h, w = image.shape[:2]
            if ch > h or cw > w:
                raise UserError(
                    f"Crop size {ch}x{cw} is larger than the {h}x{w} frames; "
                    "lower crop_size or raise size."
                )
            wh, ww = ch, cw
            if self.scale_range is not None:
                scale = float(rng.uniform(*self.scale_range))
                wh = min(h, max(1, round(ch / scale)))
                ww = min(w, max(1, round(cw / scale)))
            top = int(rng.integers(0, h - wh + 1))
            left = int(rng.integers(0, w - ww + 1))
            window = (slice(top, top + wh), slice(left, left + ww))
            image = image[window]
            mask = None if mask is None else mask[window]
            depth = None if depth is None else depth[window]
            sky = None if sky is None else sky[window]
            if (wh, ww) != (ch, cw):
                image = bilinear_resize_rgb(np.ascontiguousarray(image), (ch, cw))
                mask = None if mask is None else nearest_resize(mask, (ch, cw))
                depth = None if depth is None else nearest_resize(depth, (ch, cw))
                sky = None if sky is None else nearest_resize(sky, (ch, cw))
        height = None
        if depth is not None:
            height = depth_to_target(depth, self.depth_target, self.depth_scale, sky)
        if self.flip and rng.random() < 0.5:
            image = image[:, ::-1]
            mask = None if mask is None else mask[:, ::-1]
            height = None if height is None else height[:, ::-1]
        img = torch.from_numpy(np.array(image, dtype=np.float32)).permute(2, 0, 1) / 255.0
        sample = {"image": (img - self.mean) / self.std}
        if mask is not None:
            sample["mask"] = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.int64))
        if height is not None:
            sample["height"] = torch.from_numpy(np.ascontiguousarray(height, dtype=np.float32))
        return sample

    def eval_item(self, index: int) -> tuple[Tensor, Tensor | None, Tensor | None, str]:
        """One full resized frame for evaluation, no augmentation.

        Returns:
            ``(image uint8 3 x H x W, mask int64 H x W or None, depth float32 H x W in metres
            or None, frame id)``. The depth reference is NaN where unknown and at the sky
            (infinitely far: no metric error is defined there).

        """
        frame = self._resized(index, self.tasks)
        image = torch.from_numpy(np.array(frame.image)).permute(2, 0, 1).contiguous()
        mask = None if frame.mask is None else torch.from_numpy(frame.mask.astype(np.int64))
        depth = None
        if frame.depth is not None:
            d = np.where(np.isfinite(frame.depth) & (frame.depth > 0), frame.depth, np.nan)
            if frame.sky is not None:
                d = np.where(frame.sky, np.nan, d)
            depth = torch.from_numpy(d.astype(np.float32))
        return image, mask, depth, self.ids[index]

    def iter_eval(self) -> Iterator[tuple[Tensor, Tensor | None, Tensor | None, str]]:
        """Yield :meth:`eval_item` for every frame in order."""
        for i in range(len(self)):
            yield self.eval_item(i)

    def to_metres(self, height: np.ndarray | Tensor) -> np.ndarray | Tensor:
        """Convert a normalised depth prediction of this dataset's target to metres."""
        return height_to_metres(height, self.depth_target, self.depth_scale)

    def plot(self, sample: dict[str, Tensor], suptitle: str | None = None):  # noqa: ANN201
        """Plot a training sample: de-normalised image, train-id mask, height target."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        keys = [k for k in ("mask", "height") if k in sample]
        fig, axes = plt.subplots(1, 1 + len(keys), figsize=(4 * (1 + len(keys)), 3), squeeze=False)
        img = (sample["image"] * self.std + self.mean).clamp(0, 1).permute(1, 2, 0).numpy()
        axes[0, 0].imshow(img)
        axes[0, 0].set_title("image")
        for ax, key in zip(axes[0, 1:], keys):
            if key == "mask":
                ax.imshow(self.classes.colorize(sample["mask"].numpy()), interpolation="nearest")
                ax.set_title("mask (train ids)")
            else:
                ax.imshow(sample["height"].numpy(), cmap="magma")
                ax.set_title(f"{self.depth_target} (scale {self.depth_scale:g} m)")
        for ax in axes.ravel():
            ax.axis("off")
        if suptitle:
            fig.suptitle(suptitle)
        return fig
