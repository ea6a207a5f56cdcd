"""What the street-view datasets share (Cityscapes, Synscapes).

:mod:`semimtl_geo.data.cityscapes` and :mod:`semimtl_geo.data.synscapes` build on:

* :mod:`.base` -- :class:`~.base.StreetViewDataset`: resize, crop, scale, flip, normalise,
  the depth target (section 4.1 of the paper);
* :mod:`.datamodule` -- the training datamodule both datasets' datamodules derive from;
* :mod:`.scenes` -- the synthetic street both fixtures draw;
* :mod:`.fixtures` -- both fixtures at once (``semimtl-geo synthesize-streetview``).
"""
