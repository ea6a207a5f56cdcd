"""semimtl-geo: SemiMTL across partially labelled remote-sensing and street-view datasets.

Implements "Semi-supervised Multi-Task Learning for Semantics and Depth" (SemiMTL):
one multi-task network (shared encoder, segmentation and height decoders) trained
across datasets that each carry labels for only some tasks, with domain-aware
adversarial discriminators providing the signal for the unlabelled tasks.
"""

__version__ = "0.1.0"

from semimtl_geo.errors import UserError

__all__ = ["UserError", "__version__"]
