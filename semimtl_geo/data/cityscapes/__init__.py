"""Cityscapes and Cityscapes-depth (``train_extra``): everything about the dataset here.

* :mod:`.facts` -- splits, the 19 evaluation classes, the label-id -> train-id table
  (re-exported here);
* :mod:`.dataset` -- :class:`Cityscapes` and :class:`CityscapesDepth` (torchgeo
  datasets on the shared :mod:`semimtl_geo.data.streetview` base);
* :mod:`.datamodule` -- the ``cityscapes`` and ``cityscapes_extra`` training datamodules;
* :mod:`.fixtures` -- a tiny tree in the real layout for tests and
  ``semimtl-geo synthesize-streetview``.

Importing this package loads only the facts; ``Cityscapes`` and ``CityscapesDepth`` load
the dataset module (torchgeo) when first used.
"""

from semimtl_geo.data.cityscapes.facts import *  # noqa: F403 - the package's public facts
from semimtl_geo.data.cityscapes.facts import __all__ as _FACTS

__all__ = [*_FACTS, "Cityscapes", "CityscapesDepth"]  # noqa: F405 - lazy, see __getattr__


def __getattr__(name: str):  # noqa: ANN202 - a lazily imported class
    if name in ("Cityscapes", "CityscapesDepth"):
        from semimtl_geo.data.cityscapes import dataset

        return getattr(dataset, name)
    raise AttributeError(f"module 'semimtl_geo.data.cityscapes' has no attribute {name!r}")
