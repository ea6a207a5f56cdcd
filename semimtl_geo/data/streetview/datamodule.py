"""The training datamodule the street-view datasets share (Cityscapes, Synscapes).

A config entry::

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

Evaluation (:meth:`StreetViewDataModule.eval_samples`) yields full resized frames of the
requested split with every label on disk: train ids (uint8, 255 = ignore) and depth **in
metres** (NaN where unknown and at the sky). Subclasses say which dataset class each kind
reads (:mod:`semimtl_geo.data.cityscapes.datamodule`,
:mod:`semimtl_geo.data.synscapes.datamodule`).

Depth unit: metres.
"""

import abc
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from semimtl_geo.classes import CITYSCAPES_CLASSES
from semimtl_geo.data.datamodule import DataModule, EvalSample, KindInfo, TrainLoaderRequest
from semimtl_geo.data.streetview.base import (
    DEPTH_TARGETS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    PAPER_SIZE,
    StreetViewDataset,
)
from semimtl_geo.errors import UserError
from semimtl_geo.tasks import TASKS

OPTIONS = ("split", "size", "depth_target", "depth_scale", "max_depth", "cities")


class EpochSamples(Dataset):
    """A fixed, seeded sequence of augmented samples (deterministic with any workers)."""

    def __init__(self, dataset: StreetViewDataset, count: int, seed: int) -> None:
        self.dataset = dataset
        self.seed = seed
        rng = np.random.default_rng(seed)
        reps = -(-count // len(dataset))
        self.indices = np.concatenate([rng.permutation(len(dataset)) for _ in range(reps)])[:count]

    def __len__(self) -> int:
        """Return the number of samples of the epoch."""
        return len(self.indices)

    def __getitem__(self, j: int) -> dict[str, torch.Tensor]:
        """Return sample ``j``, augmented with a generator seeded by (seed, j)."""
        rng = np.random.default_rng([self.seed, j])
        return self.dataset.sample(int(self.indices[j]), rng)


class StreetViewDataModule(DataModule):
    """Street-view frames: options check, seeded epochs of crops, full evaluation frames."""

    #: Tasks each kind of the subclass has labels for.
    kind_tasks: ClassVar[dict[str, tuple[str, ...]]] = {}

    @abc.abstractmethod
    def build_dataset(self, split: str, tasks: tuple[str, ...],
                      options: dict[str, Any], **kwargs: Any) -> StreetViewDataset:  # noqa: ANN401
        """Instantiate this kind's dataset class for ``split`` with the labels of ``tasks``."""

    def train_split(self, options: dict[str, Any]) -> str:
        """Return the training split (``options.split``, default ``train``)."""
        return options.get("split", "train")

    def eval_tasks(self, split: str) -> tuple[str, ...]:
        """Return the labels evaluation reads for ``split`` (default: the kind's tasks)."""
        return self.kind_tasks[self.spec.kind]

    def options(self) -> dict[str, Any]:
        """Return the entry's options, checked.

        Raises:
            UserError: an unknown option, an unsupported depth target, a bad size, no root.

        """
        spec = self.spec
        opts = dict(spec.options or {})
        unknown = sorted(set(opts) - set(OPTIONS))
        if unknown:
            raise UserError(
                f"Unknown option(s) {unknown} for dataset '{spec.name}' ({spec.kind}); valid "
                f"options are {', '.join(OPTIONS)}."
            )
        target = opts.get("depth_target", "depth")
        if target not in DEPTH_TARGETS:
            raise UserError(
                f"Option depth_target of dataset '{spec.name}' must be one of "
                f"{list(DEPTH_TARGETS)}, got {target!r}."
            )
        if target == "inverse_depth":
            raise UserError(
                f"Option depth_target: inverse_depth of dataset '{spec.name}' is not supported "
                "by training runs yet: checkpoints, evaluation and prediction convert heights "
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

    @staticmethod
    def _common(opts: dict[str, Any]) -> dict[str, Any]:
        return {
            "size": opts.get("size", list(PAPER_SIZE)),
            "depth_target": opts.get("depth_target", "depth"),
            "depth_scale": float(opts.get("depth_scale", 10.0)),
            "max_depth": opts.get("max_depth"),
        }

    def dataset(
        self,
        split: str,
        tasks: Iterable[str],
        crop_size: int | None = None,
        flip: bool = False,
        mean: Iterable[float] = IMAGENET_MEAN,
        std: Iterable[float] = IMAGENET_STD,
        scale_range: Sequence[float] | None = None,
    ) -> StreetViewDataset:
        """Build the dataset of this entry for ``split`` with the labels of ``tasks``."""
        opts = self.options()
        tasks = tuple(t for t in TASKS if t in set(tasks))
        kw = dict(self._common(opts), crop_size=crop_size, flip=flip, mean=tuple(mean),
                  std=tuple(std), scale_range=scale_range)
        return self.build_dataset(split, tasks, opts, **kw)

    def describe(self) -> KindInfo:
        """Cityscapes classes, RGB bands, ImageNet statistics, the depth scale."""
        raw = self.options()
        # Fail before any model is built when the training folders are not there.
        tasks = [t for t in self.spec.tasks if t in self.kind_tasks[self.spec.kind]]
        self.dataset(self.train_split(raw), tasks)
        opts = self._common(raw)
        return KindInfo(
            classes=CITYSCAPES_CLASSES,
            bands=["R", "G", "B"],
            mean=list(IMAGENET_MEAN),
            std=list(IMAGENET_STD),
            gsd=None,
            height_scale=opts["depth_scale"],
            height_unit="m" if opts["depth_target"] == "depth" else "inverse_depth",
        )

    def train_loader(self, request: TrainLoaderRequest) -> Iterable[dict[str, Any]]:
        """``request.num_batches`` batches of seeded random crops (flips when augmenting)."""
        spec = self.spec
        supported = self.kind_tasks[spec.kind]
        missing = [t for t in request.tasks if t not in supported]
        if missing:
            raise UserError(
                f"Dataset '{spec.name}' ({spec.kind}) has no {missing} labels; set its tasks to a "
                f"subset of {list(supported)}."
            )
        ds = self.dataset(
            self.train_split(self.options()),
            request.tasks,
            crop_size=request.crop_size,
            flip=request.augment,
            mean=request.mean,
            std=request.std,
            scale_range=request.scale_range,
        )
        samples = EpochSamples(ds, request.num_batches * request.batch_size, request.seed)
        return DataLoader(
            samples,
            batch_size=request.batch_size,
            shuffle=False,
            drop_last=False,
            num_workers=request.num_workers,
            persistent_workers=False,
        )

    def eval_samples(self, split: str) -> Iterator[EvalSample]:
        """Full resized frames of ``split``: uint8 image, train ids, depth in metres."""
        ds = self.dataset(split, self.eval_tasks(split))
        for image, mask, depth, frame_id in ds.iter_eval():
            yield EvalSample(
                image.numpy(),
                None if mask is None else mask.numpy().astype(np.uint8),
                None if depth is None else depth.numpy().astype(np.float32),
                frame_id,
            )
