"""Single-task learning baselines ``stl_seg`` and ``stl_height`` (REFERENCE.md section 1).

One task, trained only on the datasets labelled for it, supervised loss of eq. 1 alone,
no discriminator. :class:`SingleTaskMethod` is also the dataset selection of the
domain-adaptation baselines (:mod:`semimtl_geo.training.methods.da`).
"""

from collections.abc import Sequence
from typing import ClassVar

from semimtl_geo.errors import UserError
from semimtl_geo.training.methods.base import (
    DatasetRole,
    DatasetSpec,
    Method,
    register_method,
)


class SingleTaskMethod(Method):
    """A one-task generator; STL trains on the datasets labelled for :attr:`task`."""

    #: The generator's only task.
    task: ClassVar[str] = ""
    #: Whether datasets without :attr:`task` labels take part (as adaptation targets).
    with_targets: ClassVar[bool] = False

    def select(
        self, specs: Sequence[DatasetSpec]
    ) -> tuple[tuple[str, ...], tuple[DatasetRole, ...]]:
        """Select the datasets labelled for :attr:`task` (with targets, every dataset)."""
        task = self.task
        sources = [i for i, d in enumerate(specs) if task in d.tasks]
        if not sources:
            raise UserError(
                f"Method '{self.name}' needs a dataset with '{task}' labels; none of "
                f"{[d.name for d in specs]} lists '{task}' in its tasks."
            )
        chosen = sources
        if self.with_targets:
            chosen = list(range(len(specs)))
            if len(sources) == len(specs):
                raise UserError(
                    f"Method '{self.name}' adapts to a dataset without '{task}' labels, but "
                    "every dataset has them; use an STL or JTL method instead."
                )
        roles = tuple(
            DatasetRole(
                name=specs[i].name,
                index=i,
                domain=k + 1,
                labelled=(task,) if task in specs[i].tasks else (),
                unlabelled=() if task in specs[i].tasks else (task,),
            )
            for k, i in enumerate(chosen)
        )
        return (task,), roles


@register_method
class STLSeg(SingleTaskMethod):
    """Segmentation alone, on the segmentation-labelled datasets."""

    name = "stl_seg"
    label = "STL Seg"
    task = "seg"


@register_method
class STLHeight(SingleTaskMethod):
    """Height alone, on the height-labelled datasets."""

    name = "stl_height"
    label = "STL Depth"
    task = "height"
