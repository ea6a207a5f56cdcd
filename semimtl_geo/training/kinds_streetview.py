"""Street-view dataset kinds: ``cityscapes``, ``cityscapes_extra`` and ``synscapes``.

Registered with :mod:`semimtl_geo.training.registry` on import. A config entry::

    - name: cityscapes
      kind: cityscapes
      root: data/cityscapes
      tasks: [seg]
      options: {size: [512, 1024], depth_target: depth, depth_scale: 10.0}

Options (all optional):

* ``split``: training split (``train``; ``cityscapes_extra`` is always ``train_extra``).
* ``size``: ``[rows, cols]`` every frame is resized to (the paper's ``[512, 1024]``).
* ``depth_target``: ``depth`` (``height = depth / depth_scale``). The paper's inverse
  depth (``inverse_depth``, sky = 0) is offered by the dataset classes but refused here:
  checkpoints, evaluation and prediction convert heights to metres linearly.
* ``depth_scale``: metres per normalised unit (default 10), the checkpoint's
  ``height_scale`` (the engine rescales datasets with other scales to the first one).
* ``max_depth``: metres beyond which depth references are ignored (default none).
* ``cities``: Cityscapes city subset.

Evaluation (``eval_samples``) yields full resized frames of the requested split with
every label on disk: train ids (uint8, 255 = ignore) and depth **in metres** (NaN where
unknown and at the sky). ``cityscapes_extra`` has no validation frames of its own and
yields none: like the paper (Table 1), the cross-city setting is evaluated on the
``cityscapes`` dataset's ``val`` split. Cityscapes' test labels are not public, so its
``test`` split is refused with a hint to use ``val``. Synscapes' ``val``/``test`` are the
paper's ordered 1K/4K split.

Depth unit: metres.
"""

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from semimtl_geo.classes import CITYSCAPES_CLASSES
from semimtl_geo.data.cityscapes.dataset import Cityscapes
from semimtl_geo.data.streetview.base import (
    DEPTH_TARGETS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    PAPER_SIZE,
    StreetViewDataset,
)
from semimtl_geo.data.synscapes.dataset import Synscapes
from semimtl_geo.errors import UserError
from semimtl_geo.training.config import DatasetConfig
from semimtl_geo.training.registry import (
    DatasetKind,
    EvalSample,
    KindInfo,
    TrainLoaderRequest,
    register_kind,
)

_OPTIONS = ("split", "size", "depth_target", "depth_scale", "max_depth", "cities")
#: Tasks each kind has labels for.
KIND_TASKS: dict[str, tuple[str, ...]] = {
    "cityscapes": ("seg", "height"),
    "cityscapes_extra": ("height",),
    "synscapes": ("seg", "height"),
}


def _options(spec: DatasetConfig) -> dict[str, Any]:
    opts = dict(spec.options or {})
    unknown = sorted(set(opts) - set(_OPTIONS))
    if unknown:
        raise UserError(
            f"Unknown option(s) {unknown} for dataset '{spec.name}' ({spec.kind}); valid "
            f"options are {', '.join(_OPTIONS)}."
        )
    target = opts.get("depth_target", "depth")
    if target not in DEPTH_TARGETS:
        raise UserError(
            f"Option depth_target of dataset '{spec.name}' must be one of "
            f"{list(DEPTH_TARGETS)}, got {target!r}."
        )
    if target == "inverse_depth":
        raise UserError(
            f"Option depth_target: inverse_depth of dataset '{spec.name}' is not supported by "
            "training runs yet: checkpoints, evaluation and prediction convert heights "
            "linearly (metres = value x height_scale); use depth_target: depth (the dataset "
            "classes offer inverse_depth for custom training loops)."
        )
    size = opts.get("size", list(PAPER_SIZE))
    if size is not None and (
        not isinstance(size, list | tuple) or len(size) != 2 or min(int(v) for v in size) <= 0
    ):
        raise UserError(
            f"Option size of dataset '{spec.name}' must be [rows, cols] or null, got {size!r}."
        )
    if not spec.root:
        raise UserError(f"Dataset '{spec.name}' has no 'root'; set data.datasets[].root.")
    return opts


def _common(opts: dict[str, Any]) -> dict[str, Any]:
    return {
        "size": opts.get("size", list(PAPER_SIZE)),
        "depth_target": opts.get("depth_target", "depth"),
        "depth_scale": float(opts.get("depth_scale", 10.0)),
        "max_depth": opts.get("max_depth"),
    }


def build_dataset(
    spec: DatasetConfig,
    split: str,
    tasks: Iterable[str],
    crop_size: int | None = None,
    flip: bool = False,
    mean: Iterable[float] = IMAGENET_MEAN,
    std: Iterable[float] = IMAGENET_STD,
    scale_range: Sequence[float] | None = None,
) -> StreetViewDataset:
    """Instantiate the dataset of ``spec`` for ``split`` with the labels of ``tasks``."""
    opts = _options(spec)
    tasks = tuple(t for t in ("seg", "height") if t in set(tasks))
    kw = dict(_common(opts), crop_size=crop_size, flip=flip, mean=tuple(mean), std=tuple(std),
              scale_range=scale_range)
    if spec.kind == "synscapes":
        return Synscapes(spec.root, split=split, tasks=tasks, **kw)
    if spec.kind == "cityscapes_extra" and split == "train_extra":
        tasks = ("height",)
    return Cityscapes(spec.root, split=split, tasks=tasks, cities=opts.get("cities"), **kw)


def _train_split(spec: DatasetConfig, opts: dict[str, Any]) -> str:
    return opts.get("split", "train_extra" if spec.kind == "cityscapes_extra" else "train")


def _describe(spec: DatasetConfig) -> KindInfo:
    raw = _options(spec)
    # Fail before any model is built when the training folders are not there.
    tasks = [t for t in spec.tasks if t in KIND_TASKS[spec.kind]]
    build_dataset(spec, _train_split(spec, raw), tasks)
    opts = _common(raw)
    return KindInfo(
        classes=CITYSCAPES_CLASSES,
        bands=["R", "G", "B"],
        mean=list(IMAGENET_MEAN),
        std=list(IMAGENET_STD),
        gsd=None,
        height_scale=opts["depth_scale"],
        height_unit="m" if opts["depth_target"] == "depth" else "inverse_depth",
    )


class _EpochSamples(Dataset):
    """A fixed, seeded sequence of augmented samples (deterministic with any workers)."""

    def __init__(self, dataset: StreetViewDataset, count: int, seed: int) -> None:
        self.dataset = dataset
        self.seed = seed
        rng = np.random.default_rng(seed)
        reps = -(-count // len(dataset))
        self.indices = np.concatenate([rng.permutation(len(dataset)) for _ in range(reps)])[:count]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, j: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, j])
        return self.dataset.sample(int(self.indices[j]), rng)


def _train_loader(spec: DatasetConfig, request: TrainLoaderRequest) -> Iterable[dict[str, Any]]:
    supported = KIND_TASKS[spec.kind]
    missing = [t for t in request.tasks if t not in supported]
    if missing:
        raise UserError(
            f"Dataset '{spec.name}' ({spec.kind}) has no {missing} labels; set its tasks to a "
            f"subset of {list(supported)}."
        )
    split = _train_split(spec, _options(spec))
    ds = build_dataset(
        spec,
        split,
        request.tasks,
        crop_size=request.crop_size,
        flip=request.augment,
        mean=request.mean,
        std=request.std,
        scale_range=request.scale_range,
    )
    samples = _EpochSamples(ds, request.num_batches * request.batch_size, request.seed)
    return DataLoader(
        samples,
        batch_size=request.batch_size,
        shuffle=False,
        drop_last=False,
        num_workers=request.num_workers,
        persistent_workers=False,
    )


def _eval_samples(spec: DatasetConfig, split: str) -> Iterator[EvalSample]:
    if spec.kind != "synscapes" and split == "test":
        raise UserError(
            "Cityscapes' test labels are not public; evaluate the street-view settings on "
            "--split val, as the paper does (Tables 1 and 3)."
        )
    if spec.kind == "cityscapes_extra" and split != "train_extra":
        # train_extra has no val/test frames; the setting is evaluated on the Cityscapes
        # dataset of the same config (Table 1).
        return
    tasks: tuple[str, ...] = KIND_TASKS[spec.kind]
    if spec.kind == "cityscapes":  # every label on disk
        root = Path(spec.root)
        on_disk = {
            "seg": (root / "gtFine" / split).is_dir(),
            "height": (root / "disparity" / split).is_dir() and (root / "camera" / split).is_dir(),
        }
        tasks = tuple(t for t in ("seg", "height") if on_disk[t]) or tasks
    ds = build_dataset(spec, split, tasks)
    for image, mask, depth, frame_id in ds.iter_eval():
        yield EvalSample(
            image.numpy(),
            None if mask is None else mask.numpy().astype(np.uint8),
            None if depth is None else depth.numpy().astype(np.float32),
            frame_id,
        )


for _name in KIND_TASKS:
    register_kind(
        DatasetKind(
            name=_name,
            describe=_describe,
            train_loader=_train_loader,
            eval_samples=_eval_samples,
        )
    )
