"""Datamodules of kinds ``cityscapes`` and ``cityscapes_extra`` (Cityscapes-depth).

Options and batches: :mod:`semimtl_geo.data.streetview.datamodule`. ``cityscapes_extra``
trains on ``train_extra`` (depth only; it has no fine labels) and has no validation frames
of its own, so it yields no evaluation frames: like the paper (Table 1), the cross-city
setting is evaluated on the ``cityscapes`` dataset's ``val`` split. Cityscapes' test
labels are not public, so its ``test`` split is refused with a hint to use ``val``.
"""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from semimtl_geo.data.cityscapes.dataset import Cityscapes
from semimtl_geo.data.datamodule import EvalSample, register_datamodule
from semimtl_geo.data.streetview.base import StreetViewDataset
from semimtl_geo.data.streetview.datamodule import StreetViewDataModule
from semimtl_geo.errors import UserError
from semimtl_geo.tasks import TASKS


@register_datamodule
class CityscapesDataModule(StreetViewDataModule):
    """Cityscapes (seg and depth) and its ``train_extra`` frames (depth only)."""

    kinds = ("cityscapes", "cityscapes_extra")
    kind_tasks = {"cityscapes": ("seg", "height"), "cityscapes_extra": ("height",)}

    def build_dataset(self, split: str, tasks: tuple[str, ...],
                      options: dict[str, Any], **kwargs: Any) -> StreetViewDataset:  # noqa: ANN401
        """:class:`Cityscapes` of ``split`` (``train_extra`` of the extra kind: depth only)."""
        if self.spec.kind == "cityscapes_extra" and split == "train_extra":
            tasks = ("height",)
        return Cityscapes(self.spec.root, split=split, tasks=tasks,
                          cities=options.get("cities"), **kwargs)

    def train_split(self, options: dict[str, Any]) -> str:
        """Return ``options.split``, default ``train`` (``train_extra`` for the extra kind)."""
        default = "train_extra" if self.spec.kind == "cityscapes_extra" else "train"
        return options.get("split", default)

    def eval_tasks(self, split: str) -> tuple[str, ...]:
        """Return every label on disk for ``split`` (``gtFine``; ``disparity`` + ``camera``)."""
        tasks = self.kind_tasks[self.spec.kind]
        if self.spec.kind != "cityscapes":
            return tasks
        root = Path(self.spec.root)
        on_disk = {
            "seg": (root / "gtFine" / split).is_dir(),
            "height": (root / "disparity" / split).is_dir() and (root / "camera" / split).is_dir(),
        }
        return tuple(t for t in TASKS if on_disk[t]) or tasks

    def eval_samples(self, split: str) -> Iterator[EvalSample]:
        """Full frames of ``split``; none for ``cityscapes_extra`` (see the module docstring)."""
        if split == "test":
            raise UserError(
                "Cityscapes' test labels are not public; evaluate the street-view settings on "
                "--split val, as the paper does (Tables 1 and 3)."
            )
        if self.spec.kind == "cityscapes_extra" and split != "train_extra":
            # train_extra has no val/test frames; the setting is evaluated on the Cityscapes
            # dataset of the same config (Table 1).
            return
        yield from super().eval_samples(split)
