"""The two tasks of the paper and where their labels travel in a batch.

``seg``: semantic segmentation (class ids, 255 = ignore); ``height``: per-pixel height
above ground (the paper's "depth" task on the ISPRS data, section 4). Loaders put a
task's labels in a batch under :data:`TASK_KEYS`; the models name their heads by task.
"""

from typing import Literal

Task = Literal["seg", "height"]
#: Every task, in canonical order (generator heads, tables and configs follow it).
TASKS: tuple[str, ...] = ("seg", "height")
#: Batch key holding each task's labels (the loaders' contract with the training engine).
TASK_KEYS: dict[str, str] = {"seg": "mask", "height": "height"}
