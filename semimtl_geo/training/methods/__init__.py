"""Training methods of the paper, one registered class each (section 3, Algorithm 1).

* :mod:`~.base` -- the :class:`Method` base class with its fixed hooks, the registry,
  :class:`MethodPlan` and the discriminator-input helpers;
* :mod:`~.stl` (``stl_seg``, ``stl_height``), :mod:`~.da` (``da_seg``, ``da_height``),
  :mod:`~.jtl`, :mod:`~.semisd` -- the baselines of REFERENCE.md section 1;
* :mod:`~.semimtl` -- SemiMTL's domain-aware adversarial learning.

Adding a method: a new module in this folder with one subclass of :class:`Method`
(overriding the hooks that differ) decorated with :func:`register_method`, plus a config
file naming it. Every module here is imported (registered) with the package, so
``method: <name>`` then works in configs and ``--method <name>`` on the CLI; nothing else
lists the methods. A class defined elsewhere registers the same way once its module is
imported before the config is loaded.
"""

import importlib
import pkgutil

from semimtl_geo.training.methods.base import (
    METHOD_LABELS,
    DatasetRole,
    DiscriminatorKind,
    Method,
    MethodPlan,
    check_batch,
    discriminate,
    discriminator_accuracies,
    discriminator_losses,
    generator_losses,
    generator_terms,
    get_method,
    height_target,
    method_label,
    method_names,
    method_uses_mode,
    plan_method,
    prediction_to_d,
    register_method,
    target_to_d,
    unregister_method,
)

#: The paper's methods, registered first and in the order of its tables (CLI choices and
#: table rows follow the registry's order); other modules here follow by name.
BUILTIN = ("stl", "da", "jtl", "semisd", "semimtl")


def import_method_modules() -> list[str]:
    """Import every method module of this package (built-ins first); returns their names."""
    found = sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name != "base")
    names = [*BUILTIN, *(name for name in found if name not in BUILTIN)]
    for name in names:
        importlib.import_module(f"{__name__}.{name}")
    return names


import_method_modules()

__all__ = [
    "METHOD_LABELS",
    "DatasetRole",
    "DiscriminatorKind",
    "Method",
    "MethodPlan",
    "check_batch",
    "discriminate",
    "discriminator_accuracies",
    "discriminator_losses",
    "generator_losses",
    "generator_terms",
    "get_method",
    "height_target",
    "import_method_modules",
    "method_label",
    "method_names",
    "method_uses_mode",
    "plan_method",
    "prediction_to_d",
    "register_method",
    "target_to_d",
    "unregister_method",
]
