"""Synscapes torchgeo dataset: photorealistic synthetic street scenes with exact labels.

Source: https://synscapes.on.liu.se (7D Labs / Linköping University; registration
needed). 25,000 rendered frames, 1440x720 px RGB, designed to match Cityscapes' scene
layout and label set.

Layout (the unpacked archive; ``{i}`` runs 1..25000)::

    img/rgb/{i}.png      8-bit RGB render
    img/class/{i}.png    8-bit Cityscapes label ids 0..33 (mapped to the 19 train ids of
                         :data:`semimtl_geo.classes.CITYSCAPES_CLASSES`, others -> 255)
    img/depth/{i}.npy    float32 depth in metres
    meta/{i}.json        scene metadata (not used)

Splits: the dataset has no official split; the paper takes the consecutive 20K/1K/4K
frames (in id order) as train/val/test. With ``N`` frames on disk (a partial download or
the test fixture), the split is proportional, in id order: ``round(0.8 N)`` train, then
``max(1, round(0.04 N))`` val, the rest test; for ``N = 25000`` that is exactly the
paper's 20000/1000/4000 (ids 1-20000, 20001-21000, 21001-25000), for ``N = 25`` it is
20/1/4.

Depth target: the paper regresses *inverse* depth so that points at infinity, the sky,
are 0: ``depth_target="inverse_depth"`` gives ``depth_scale / depth`` with sky pixels (label
id 23) set to 0. With ``depth_target="depth"`` sky pixels are unknown (NaN). Evaluation
references (:meth:`StreetViewDataset.iter_eval`) are depth in metres with the sky
excluded.

Citation: M. Wrenninge and J. Unger, "Synscapes: A Photorealistic Synthetic Dataset for
Street Scene Parsing", arXiv:1810.08705, 2018.
"""

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from semimtl_geo.data.cityscapes.facts import SKY_LABEL_ID, label_ids_to_train_ids
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
from semimtl_geo.data.synscapes.facts import SPLITS, split_ids
from semimtl_geo.errors import UserError

_HINT = "unpack the Synscapes archive from synscapes.on.liu.se so that the root holds img/."


class Synscapes(StreetViewDataset):
    """Synscapes renders with train-id segmentation and metric depth.

    Args:
        root: dataset root holding ``img/rgb``, ``img/class`` and ``img/depth``.
        split: ``train``, ``val`` or ``test`` (see the module docstring).
        tasks: labels to load: ``"seg"`` (``img/class``) and/or ``"height"``
            (``img/depth``; the inverse target also reads ``img/class`` for the sky).
        size, crop_size, flip, depth_target, depth_scale, max_depth, mean, std: see
            :class:`~semimtl_geo.data.streetview.base.StreetViewDataset`.

    Raises:
        UserError: a folder the requested tasks need is missing, or the split is empty.

    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
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
        super().__init__(tasks, size, crop_size, flip, depth_target, depth_scale, max_depth,
                         mean, std, scale_range=scale_range)
        self.root = check_root_and_split("Synscapes", root, split, SPLITS)
        self.split = split
        self.rgb_dir = require_folder(self.root / "img" / "rgb", "Synscapes img/rgb", _HINT)
        # The class map is needed for seg and for the sky of the depth targets.
        self.class_dir = require_folder(self.root / "img" / "class", "Synscapes img/class", _HINT)
        self.depth_dir = None
        if "height" in self.tasks:
            self.depth_dir = require_folder(
                self.root / "img" / "depth", "Synscapes img/depth", _HINT
            )
        stems = [p.stem for p in self.rgb_dir.glob("*.png") if p.stem.isdigit()]
        if not stems:
            raise UserError(f"No numbered *.png renders in {self.rgb_dir}; {_HINT}")
        all_ids = sorted(stems, key=int)
        self.ids = split_ids(all_ids, split)
        if not self.ids:
            raise UserError(
                f"Synscapes split '{split}' is empty with {len(all_ids)} frames in "
                f"{self.rgb_dir}; use another split or more frames."
            )

    def _file(self, folder: Path, index: int, ext: str) -> Path:
        path = folder / f"{self.ids[index]}.{ext}"
        if not path.is_file():
            raise UserError(f"{path} is missing for Synscapes frame {self.ids[index]}; {_HINT}")
        return path

    def _read_frame(self, index: int, tasks: tuple[str, ...]) -> Frame:
        image = read_rgb(self._file(self.rgb_dir, index, "png"))
        label_ids = read_png_array(self._file(self.class_dir, index, "png"))
        if label_ids.ndim == 3:  # tolerate an RGB-encoded copy of the grey id map
            label_ids = label_ids[..., 0]
        depth = None
        if "height" in tasks:
            assert self.depth_dir is not None
            path = self._file(self.depth_dir, index, "npy")
            try:
                depth = np.squeeze(np.load(path))
            except (ValueError, OSError) as exc:
                raise UserError(f"{path} is not a readable .npy depth map ({exc}).") from None
        for name, arr in (("class", label_ids), ("depth", depth)):
            if arr is not None and arr.shape != image.shape[:2]:
                raise UserError(
                    f"The {name} map of Synscapes frame {self.ids[index]} has shape "
                    f"{arr.shape} but its image is {image.shape[:2]}; re-extract the archive."
                )
        label_ids = self._nearest(label_ids)
        mask = label_ids_to_train_ids(label_ids) if "seg" in tasks else None
        sky = None
        if depth is not None:
            depth = self._nearest(depth).astype(np.float32)
            sky = label_ids == SKY_LABEL_ID
        return Frame(image, mask, depth, sky)
