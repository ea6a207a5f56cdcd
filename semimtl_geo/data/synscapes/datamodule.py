"""Datamodule of kind ``synscapes``: the paper's 20K/1K/4K split, seg and depth.

Options and batches: :mod:`semimtl_geo.data.streetview.datamodule`; ``val``/``test`` are
the paper's ordered 1K/4K frames (:mod:`semimtl_geo.data.synscapes.facts`).
"""

from typing import Any

from semimtl_geo.data.datamodule import register_datamodule
from semimtl_geo.data.streetview.base import StreetViewDataset
from semimtl_geo.data.streetview.datamodule import StreetViewDataModule
from semimtl_geo.data.synscapes.dataset import Synscapes


@register_datamodule
class SynscapesDataModule(StreetViewDataModule):
    """Synscapes renders with train-id segmentation and metric depth."""

    kinds = ("synscapes",)
    kind_tasks = {"synscapes": ("seg", "height")}

    def build_dataset(self, split: str, tasks: tuple[str, ...],
                      options: dict[str, Any], **kwargs: Any) -> StreetViewDataset:  # noqa: ANN401
        """:class:`Synscapes` of ``split``."""
        return Synscapes(self.spec.root, split=split, tasks=tasks, **kwargs)
