"""Synscapes: everything about the dataset here.

* :mod:`.facts` -- the paper's 20K/1K/4K split in id order (re-exported here);
* :mod:`.dataset` -- :class:`Synscapes` (a torchgeo ``NonGeoDataset`` on the shared
  :mod:`semimtl_geo.data.streetview` base; label ids mapped by
  :mod:`semimtl_geo.data.cityscapes.facts`);
* :mod:`.datamodule` -- the ``synscapes`` training datamodule;
* :mod:`.fixtures` -- a tiny tree in the real layout for tests and
  ``semimtl-geo synthesize-streetview``.

Importing this package loads only the facts; ``Synscapes`` loads the dataset module
(torchgeo) when first used.
"""

from semimtl_geo.data.synscapes.facts import *  # noqa: F403 - the package's public facts
from semimtl_geo.data.synscapes.facts import __all__ as _FACTS

__all__ = [*_FACTS, "Synscapes"]  # noqa: F405 - lazy, see __getattr__


def __getattr__(name: str):  # noqa: ANN202 - a lazily imported class
    if name == "Synscapes":
        from semimtl_geo.data.synscapes.dataset import Synscapes

        return Synscapes
    raise AttributeError(f"module 'semimtl_geo.data.synscapes' has no attribute {name!r}")
