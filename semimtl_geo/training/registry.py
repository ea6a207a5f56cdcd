"""Dataset-kind registry: how the engine gets training batches and evaluation tiles.

A config lists datasets by *kind*::

    data:
      datasets:
        - {name: potsdam,   kind: isprs, root: data/isprs, tasks: [seg]}
        - {name: vaihingen, kind: isprs, root: data/isprs, tasks: [height]}

Each kind is a :class:`DatasetKind` with three functions, all taking the dataset's
:class:`~semimtl_geo.training.config.DatasetConfig` (``name``, ``root``, ``tasks``,
free-form ``options``):

* ``describe(spec) -> KindInfo``: class table, band names, per-band mean/std (on pixel
  values / 255), GSD, ``height_scale`` (metres per unit of the normalised training
  height, i.e. what the loader's ``"height"`` must be multiplied by to get metres) and
  the dtype and value range of the raw pixels (uint8 0-255 unless stated), which the
  checkpoint records so inference can refuse or rescale inputs of another kind.
* ``train_loader(spec, request) -> Iterable[dict]``: exactly ``request.num_batches``
  batches of training sample dicts (``"image"`` float32 ``B x C x h x w`` normalised with
  ``request.mean/std``; ``"mask"`` int64 ``B x h x w``, 255 = ignore; ``"height"`` float32
  ``B x h x w``, NaN = no data), with only the labels of ``request.tasks``. The batches
  must be a deterministic function of ``request.seed`` (the engine rebuilds loaders every
  epoch with a new seed; that is what makes ``--resume`` exact).
* ``eval_samples(spec, split) -> Iterator[EvalSample]``: full test images/tiles as
  ``(image uint8 C x H x W, mask uint8 H x W or None, height float32 H x W in metres or
  None, id)``, with every label that exists on disk (evaluation is not limited to the
  training tasks).

To add a kind, write a module that calls :func:`register_kind` at import time and add
its dotted path to :data:`BUILTIN_KIND_MODULES` (or import it yourself before training).
Unknown kind names raise a :class:`~semimtl_geo.errors.UserError` listing the known ones.
"""

import importlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from semimtl_geo.classes import ClassTable
from semimtl_geo.errors import UserError

if TYPE_CHECKING:
    from semimtl_geo.training.config import DatasetConfig

#: Modules imported on first lookup; each registers its kinds.
BUILTIN_KIND_MODULES: list[str] = [
    "semimtl_geo.training.kinds_isprs",
    "semimtl_geo.training.kinds_streetview",
]


@dataclass(frozen=True)
class KindInfo:
    """Static facts about one dataset that end up in the model checkpoint."""

    classes: ClassTable
    bands: list[str]
    mean: list[float]
    std: list[float]
    gsd: float | None
    height_scale: float = 1.0
    height_unit: str = "m"
    input_dtype: str = "uint8"
    input_range: tuple[float, float] = (0.0, 255.0)


@dataclass(frozen=True)
class TrainLoaderRequest:
    """What the engine asks a kind's ``train_loader`` for."""

    tasks: tuple[str, ...]
    crop_size: int
    batch_size: int
    num_batches: int
    num_workers: int
    seed: int
    mean: list[float]
    std: list[float]
    augment: bool = True
    scale_range: tuple[float, float] | None = None


class EvalSample(NamedTuple):
    """One full evaluation image/tile with every label available for it."""

    image: np.ndarray
    mask: np.ndarray | None
    height: np.ndarray | None
    id: str


@dataclass(frozen=True)
class DatasetKind:
    """The three functions a dataset kind provides (see the module docstring)."""

    name: str
    describe: Callable[["DatasetConfig"], KindInfo]
    train_loader: Callable[["DatasetConfig", TrainLoaderRequest], Iterable[dict[str, Any]]]
    eval_samples: Callable[["DatasetConfig", str], Iterator[EvalSample]]


_KINDS: dict[str, DatasetKind] = {}
_loaded_builtins = False


def register_kind(kind: DatasetKind, overwrite: bool = False) -> DatasetKind:
    """Make ``kind`` available to configs under ``kind.name``."""
    if kind.name in _KINDS and not overwrite and _KINDS[kind.name] is not kind:
        raise ValueError(f"dataset kind '{kind.name}' is already registered")
    _KINDS[kind.name] = kind
    return kind


def unregister_kind(name: str) -> None:
    """Remove a kind (tests use this to clean up their in-memory kinds)."""
    _KINDS.pop(name, None)


def _load_builtins() -> None:
    global _loaded_builtins
    if _loaded_builtins:
        return
    _loaded_builtins = True
    for module in BUILTIN_KIND_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:  # a real missing dependency inside the module
                raise


def available_kinds() -> list[str]:
    """Names of every registered kind."""
    _load_builtins()
    return sorted(_KINDS)


def get_kind(name: str) -> DatasetKind:
    """Look a kind up by name.

    Raises:
        UserError: unknown name (the message lists the registered kinds).

    """
    _load_builtins()
    if name not in _KINDS:
        raise UserError(
            f"Unknown dataset kind '{name}'; use one of {', '.join(sorted(_KINDS)) or '(none)'} "
            "in 'data.datasets[].kind'."
        )
    return _KINDS[name]
