"""Training methods of the paper, one registered class each (section 3, Algorithm 1).

* :mod:`~.base` -- the :class:`Method` base class with its fixed hooks, the registry,
  :class:`MethodPlan` and the discriminator-input helpers;
* :mod:`~.stl` (``stl_seg``, ``stl_height``), :mod:`~.da` (``da_seg``, ``da_height``),
  :mod:`~.jtl`, :mod:`~.semisd` -- the baselines of REFERENCE.md section 1;
* :mod:`~.semimtl` -- SemiMTL's domain-aware adversarial learning.

Adding a method: subclass :class:`Method` (override the hooks that differ), decorate it
with :func:`register_method` and import its module here (or anywhere before the config
is loaded); ``method: <name>`` then works in configs and ``--method <name>`` on the CLI.
"""

import importlib

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

#: Built-in method modules, imported (registered) in the order of the paper's tables.
BUILTIN = ("stl", "da", "jtl", "semisd", "semimtl")
for _module in BUILTIN:
    importlib.import_module(f"{__name__}.{_module}")

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
    "method_label",
    "method_names",
    "method_uses_mode",
    "plan_method",
    "prediction_to_d",
    "register_method",
    "target_to_d",
    "unregister_method",
]
