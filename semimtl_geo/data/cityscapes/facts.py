"""Cityscapes facts: splits, the 19 evaluation classes and the label-id -> train-id table.

Source: https://www.cityscapes-dataset.com; the table is cityscapesScripts'
``helpers/labels.py``. Synscapes stores the same 34 label ids, so it reads this table too.
"""

import numpy as np

from semimtl_geo.classes import CITYSCAPES_CLASSES, IGNORE_INDEX

__all__ = [
    "CLASSES",
    "LABEL_ID_TO_TRAIN_ID",
    "NUM_LABEL_IDS",
    "SKY_LABEL_ID",
    "SPLITS",
    "label_ids_to_train_ids",
]

#: The 19 evaluation classes (train ids 0..18) with the Cityscapes palette.
CLASSES = CITYSCAPES_CLASSES
#: train 2975 frames, val 500, test 1525 (labels not public), train_extra 19998 (no fine
#: labels: the paper's "Cityscapes-depth").
SPLITS: tuple[str, ...] = ("train", "val", "test", "train_extra")

#: Cityscapes label id (0..33, as stored in ``*_gtFine_labelIds.png`` and Synscapes'
#: ``img/class``) -> train id (0..18) or 255 (ignored). From cityscapesScripts'
#: ``helpers/labels.py``; ids outside 0..33 (e.g. license plate -1) are ignored too.
LABEL_ID_TO_TRAIN_ID: dict[int, int] = {
    7: 0,  # road
    8: 1,  # sidewalk
    11: 2,  # building
    12: 3,  # wall
    13: 4,  # fence
    17: 5,  # pole
    19: 6,  # traffic light
    20: 7,  # traffic sign
    21: 8,  # vegetation
    22: 9,  # terrain
    23: 10,  # sky
    24: 11,  # person
    25: 12,  # rider
    26: 13,  # car
    27: 14,  # truck
    28: 15,  # bus
    31: 16,  # train
    32: 17,  # motorcycle
    33: 18,  # bicycle
}
#: Cityscapes label id of the sky (train id 10).
SKY_LABEL_ID = 23
NUM_LABEL_IDS = 34

_LUT = np.full(256, IGNORE_INDEX, dtype=np.uint8)
for _label_id, _train_id in LABEL_ID_TO_TRAIN_ID.items():
    _LUT[_label_id] = _train_id
assert len(LABEL_ID_TO_TRAIN_ID) == len(CITYSCAPES_CLASSES)


def label_ids_to_train_ids(label_ids: np.ndarray) -> np.ndarray:
    """Map Cityscapes label ids (0..33) to train ids (0..18); everything else -> 255."""
    ids = np.asarray(label_ids)
    out = np.full(ids.shape, IGNORE_INDEX, dtype=np.int64)
    inside = (ids >= 0) & (ids < 256)
    out[inside] = _LUT[ids[inside].astype(np.int64)]
    return out
