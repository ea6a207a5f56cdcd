"""Joint task learning ``jtl`` (REFERENCE.md section 1).

Every dataset contributes the supervised losses (eq. 1) of its labelled tasks to one
multi-task generator; no discriminator. This is :class:`Method`'s default behaviour.
"""

from semimtl_geo.training.methods.base import Method, register_method


@register_method
class JTL(Method):
    """Every labelled task on every dataset, supervised terms only."""

    name = "jtl"
    label = "JTL"
