"""Cityscapes and Cityscapes-depth (its ``train_extra`` split) torchgeo datasets.

Source: https://www.cityscapes-dataset.com (registration needed). Stereo video frames
from 50 European cities, 2048x1024 px, 8-bit RGB (left camera).

Packages and layout (each zip unpacks into the dataset root)::

    leftImg8bit_trainvaltest.zip  leftImg8bit/{train,val,test}/{city}/..._leftImg8bit.png
    gtFine_trainvaltest.zip       gtFine/{train,val,test}/{city}/..._gtFine_labelIds.png
    disparity_trainvaltest.zip    disparity/{train,val,test}/{city}/..._disparity.png
    camera_trainvaltest.zip       camera/{train,val,test}/{city}/..._camera.json
    leftImg8bit_trainextra.zip    leftImg8bit/train_extra/{city}/...
    disparity_trainextra.zip      disparity/train_extra/{city}/...
    camera_trainextra.zip         camera/train_extra/{city}/...

Frames are named ``{city}_{seq:06d}_{frame:06d}_<suffix>``; the part before the suffix
is the frame id shared by all packages.

Splits: train 2975 frames (18 cities), val 500 (3 cities), test 1525 (no public labels),
train_extra 19998 frames (23 other cities, coarse labels only: the paper's
"Cityscapes-depth", used here for depth alone, :class:`CityscapesDepth`).

Labels: ``*_gtFine_labelIds.png`` holds the 34 label ids 0..33; they map to the 19
evaluation classes (train ids 0..18, :data:`semimtl_geo.classes.CITYSCAPES_CLASSES`) by
:data:`semimtl_geo.data.cityscapes.facts.LABEL_ID_TO_TRAIN_ID`; every other id becomes
255 (ignored).

Depth: ``*_disparity.png`` is uint16 with ``d = (p - 1) / 256`` pixels of disparity for
``p > 0`` and ``p = 0`` invalid; with the camera's stereo ``baseline`` (metres) and focal
length ``fx`` (pixels) from ``camera/*.json`` (``{"extrinsic": {"baseline": ...},
"intrinsic": {"fx": ...}}``), ``depth = baseline * fx / d`` metres. ``p = 1`` (zero
disparity) is also treated as unknown. Depth is computed at native resolution, then
resized with nearest neighbours (disparity and focal length would scale together, so
the depth itself does not change with resizing). Unit: metres.

Citation: M. Cordts et al., "The Cityscapes Dataset for Semantic Urban Scene
Understanding", CVPR 2016.
"""

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from semimtl_geo.data.cityscapes.facts import SPLITS, label_ids_to_train_ids
from semimtl_geo.data.streetview.base import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PAPER_SIZE,
    DepthTarget,
    Frame,
    StreetViewDataset,
    check_root_and_split,
    read_png_array,
    read_rgb,
    require_folder,
)
from semimtl_geo.errors import UserError

_IMAGE_SUFFIX = "_leftImg8bit.png"
_HINT = {
    "leftImg8bit": "unzip leftImg8bit_trainvaltest.zip (leftImg8bit_trainextra.zip for "
    "train_extra) from cityscapes-dataset.com into the dataset root.",
    "gtFine": "unzip gtFine_trainvaltest.zip from cityscapes-dataset.com into the dataset root.",
    "disparity": "unzip disparity_trainvaltest.zip (disparity_trainextra.zip for train_extra) "
    "from cityscapes-dataset.com into the dataset root.",
    "camera": "unzip camera_trainvaltest.zip (camera_trainextra.zip for train_extra) "
    "from cityscapes-dataset.com into the dataset root.",
}


def disparity_to_depth(raw: np.ndarray, baseline: float, fx: float) -> np.ndarray:
    """Cityscapes disparity PNG values -> depth in metres (NaN where unknown).

    ``d = (p - 1) / 256`` for ``p > 0``; ``depth = baseline * fx / d``. ``p = 0`` is the
    dataset's invalid marker; ``p = 1`` (zero disparity) has no finite depth and is
    returned as NaN as well.

    Args:
        raw: uint16 disparity PNG values.
        baseline: stereo baseline in metres (``extrinsic.baseline``).
        fx: focal length in pixels at the disparity map's resolution (``intrinsic.fx``).

    """
    p = np.asarray(raw).astype(np.float64)
    d = (p - 1.0) / 256.0
    depth = np.full(p.shape, np.nan, dtype=np.float64)
    ok = (p > 0) & (d > 0)
    depth[ok] = baseline * fx / d[ok]
    return depth.astype(np.float32)


def read_camera(path: Path) -> tuple[float, float]:
    """Read ``(baseline metres, fx pixels)`` from a Cityscapes ``*_camera.json``."""
    try:
        cam = json.loads(Path(path).read_text())
        return float(cam["extrinsic"]["baseline"]), float(cam["intrinsic"]["fx"])
    except FileNotFoundError:
        raise UserError(
            f"Camera file {path} is missing; {_HINT['camera']}"
        ) from None
    except (KeyError, TypeError, ValueError, json.JSONDecodeError) as exc:
        raise UserError(
            f"Camera file {path} is not a Cityscapes camera JSON (needs extrinsic.baseline "
            f"and intrinsic.fx: {exc}); re-extract it from the camera package."
        ) from None


class Cityscapes(StreetViewDataset):
    """Cityscapes frames with train-id segmentation and disparity-derived depth.

    Samples follow the shared training contract (see
    :meth:`StreetViewDataset.__getitem__`); :meth:`StreetViewDataset.iter_eval` gives full
    frames with both references for evaluation (the paper evaluates both tasks on val).

    Args:
        root: dataset root holding ``leftImg8bit/``, ``gtFine/``, ``disparity/``, ``camera/``.
        split: ``train``, ``val``, ``test`` or ``train_extra``.
        tasks: labels to load: ``"seg"`` (needs ``gtFine``), ``"height"`` (needs
            ``disparity`` and ``camera``).
        cities: optional subset of city folder names.
        size, crop_size, flip, depth_target, depth_scale, max_depth, mean, std, scale_range: see
            :class:`~semimtl_geo.data.streetview.base.StreetViewDataset`.

    Raises:
        UserError: a folder the requested tasks need is missing, or it holds no frames.

    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        tasks: Sequence[str] = ("seg", "height"),
        cities: Sequence[str] | None = None,
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
        super().__init__(tasks, size, crop_size, flip, depth_target, depth_scale, max_depth,
                         mean, std, scale_range=scale_range)
        self.root = check_root_and_split("Cityscapes", root, split, SPLITS)
        self.split = split
        if split == "train_extra" and "seg" in self.tasks:
            raise UserError(
                "Cityscapes train_extra has no fine labels; use tasks ['height'] "
                "(Cityscapes-depth) for it."
            )
        needed = ["leftImg8bit"]
        if "seg" in self.tasks:
            needed.append("gtFine")
        if "height" in self.tasks:
            needed += ["disparity", "camera"]
        self.folders = {
            name: require_folder(self.root / name / split, f"Cityscapes {name}", _HINT[name])
            for name in needed
        }
        images = sorted(self.folders["leftImg8bit"].glob(f"*/*{_IMAGE_SUFFIX}"))
        if cities is not None:
            wanted = set(cities)
            missing = wanted - {p.parent.name for p in images}
            if missing:
                raise UserError(
                    f"Cities {sorted(missing)} have no images in {self.folders['leftImg8bit']}; "
                    "check the city names."
                )
            images = [p for p in images if p.parent.name in wanted]
        if not images:
            raise UserError(
                f"No *{_IMAGE_SUFFIX} files under {self.folders['leftImg8bit']}/<city>/; "
                f"{_HINT['leftImg8bit']}"
            )
        self.images = images
        self.ids = [p.name[: -len(_IMAGE_SUFFIX)] for p in images]

    def _path(self, kind: str, index: int, suffix: str) -> Path:
        image = self.images[index]
        path = self.folders[kind] / image.parent.name / f"{self.ids[index]}{suffix}"
        if not path.is_file():
            raise UserError(f"{path} is missing for image {image.name}; {_HINT[kind]}")
        return path

    def _read_frame(self, index: int, tasks: tuple[str, ...]) -> Frame:
        image = read_rgb(self.images[index])
        label_ids = disparity = None
        if "seg" in tasks:
            label_ids = read_png_array(self._path("gtFine", index, "_gtFine_labelIds.png"))
        if "height" in tasks:
            disparity = read_png_array(self._path("disparity", index, "_disparity.png"))
        for name, arr in (("label", label_ids), ("disparity", disparity)):
            if arr is not None and arr.shape != image.shape[:2]:
                raise UserError(
                    f"The {name} map of {self.ids[index]} is {arr.shape[1]}x{arr.shape[0]} but "
                    f"its image is {image.shape[1]}x{image.shape[0]}; re-extract the packages."
                )
        mask = None if label_ids is None else label_ids_to_train_ids(self._nearest(label_ids))
        depth = None
        if disparity is not None:
            # fx belongs to the native resolution, like the stored disparity values.
            baseline, fx = read_camera(self._path("camera", index, "_camera.json"))
            depth = disparity_to_depth(self._nearest(disparity), baseline, fx)
        return Frame(image, mask, depth, None)


class CityscapesDepth(Cityscapes):
    """The paper's "Cityscapes-depth": the ``train_extra`` split, images + disparity only.

    Same arguments as :class:`Cityscapes` without ``split`` and ``tasks`` (always
    ``train_extra`` and ``("height",)``).
    """

    def __init__(self, root: str | Path, **kwargs) -> None:
        for key in ("split", "tasks"):
            if key in kwargs:
                raise UserError(f"CityscapesDepth takes no '{key}' (it is train_extra depth only).")
        super().__init__(root, split="train_extra", tasks=("height",), **kwargs)
