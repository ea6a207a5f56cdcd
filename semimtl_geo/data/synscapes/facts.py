"""Synscapes facts: the paper's 20K/1K/4K split of the 25,000 renders, in id order.

Source: https://synscapes.on.liu.se; the split is the paper's (section 4.1). Synscapes
stores Cityscapes label ids: :mod:`semimtl_geo.data.cityscapes.facts` maps them.
"""

from collections.abc import Sequence

from semimtl_geo.classes import CITYSCAPES_CLASSES

__all__ = ["CLASSES", "PAPER_SPLIT", "SPLITS", "split_ids", "split_sizes"]

#: Synscapes is evaluated on the 19 Cityscapes classes.
CLASSES = CITYSCAPES_CLASSES
SPLITS: tuple[str, ...] = ("train", "val", "test")
#: The paper's split of the 25,000 frames, in id order.
PAPER_SPLIT = {"train": 20000, "val": 1000, "test": 4000}


def split_sizes(n: int) -> dict[str, int]:
    """Frames per split for ``n`` frames: the paper's 20K/1K/4K, proportionally, in order."""
    if n == sum(PAPER_SPLIT.values()):
        return dict(PAPER_SPLIT)
    n_train = min(n, int(round(0.8 * n)))
    n_val = min(n - n_train, max(1, int(round(0.04 * n))))
    return {"train": n_train, "val": n_val, "test": n - n_train - n_val}


def split_ids(ids: Sequence[str], split: str) -> list[str]:
    """Return the ids of ``split``, given every frame id sorted in numeric order."""
    sizes = split_sizes(len(ids))
    start = {"train": 0, "val": sizes["train"], "test": sizes["train"] + sizes["val"]}[split]
    return list(ids[start : start + sizes[split]])
