"""Datamodules: what a dataset gives training (batches) and evaluation (whole tiles).

A config lists datasets by *kind*::

    data:
      datasets:
        - {name: potsdam,   kind: isprs, root: data/isprs, tasks: [seg]}
        - {name: vaihingen, kind: isprs, root: data/isprs, tasks: [height]}

Each kind is served by a :class:`DataModule`, a Lightning ``LightningDataModule`` built
from one such entry (``spec``: ``name``, ``kind``, ``root``, ``tasks``, free-form
``options``) and living with its dataset, as torchgeo's do:
:class:`~semimtl_geo.data.isprs.datamodule.ISPRSDataModule` (``isprs``),
:class:`~semimtl_geo.data.cityscapes.datamodule.CityscapesDataModule` (``cityscapes``,
``cityscapes_extra``), :class:`~semimtl_geo.data.synscapes.datamodule.SynscapesDataModule`
(``synscapes``). A datamodule provides:

* :meth:`DataModule.describe` ``-> KindInfo``: class table, band names, per-band mean/std
  (on pixel values / 255), GSD, ``height_scale`` (metres per unit of the normalised
  training height, i.e. what the loader's ``"height"`` must be multiplied by to get
  metres) and the dtype and value range of the raw pixels (uint8 0-255 unless stated),
  which the checkpoint records so inference can refuse or rescale inputs of another kind.
* :meth:`DataModule.train_dataloader` (Lightning's hook; the :class:`TrainLoaderRequest`
  given to the constructor or to :meth:`DataModule.train_loader`): exactly
  ``request.num_batches`` batches of training sample dicts (``"image"`` float32
  ``B x C x h x w`` normalised with ``request.mean/std``; ``"mask"`` int64 ``B x h x w``,
  255 = ignore; ``"height"`` float32 ``B x h x w``, NaN = no data), with only the labels
  of ``request.tasks``. The batches must be a deterministic function of ``request.seed``
  (the engine asks for new loaders every epoch with a new seed; that is what makes
  ``--resume`` exact).
* :meth:`DataModule.eval_samples` ``(split) -> Iterator[EvalSample]``: full test
  images/tiles as ``(image uint8 C x H x W, mask uint8 H x W or None, height float32
  H x W in metres or None, id)``, with every label that exists on disk (evaluation is not
  limited to the training tasks).

To add a kind, subclass :class:`DataModule`, list its config names in ``kinds`` and
decorate it with :func:`register_datamodule` (in a module of
:data:`BUILTIN_DATAMODULES`, or imported before training). Unknown kind names raise a
:class:`~semimtl_geo.errors.UserError` listing the known ones.
"""

import abc
import importlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple, Protocol

import numpy as np
from lightning.pytorch import LightningDataModule

from semimtl_geo.classes import ClassTable
from semimtl_geo.errors import UserError

#: Modules imported on first lookup; each registers its datamodules.
BUILTIN_DATAMODULES: list[str] = [
    "semimtl_geo.data.isprs.datamodule",
    "semimtl_geo.data.cityscapes.datamodule",
    "semimtl_geo.data.synscapes.datamodule",
]


class DatasetSpec(Protocol):
    """One ``data.datasets[]`` entry of a training config (what a datamodule is built from)."""

    name: str
    kind: str
    root: str
    tasks: Sequence[str]
    options: Mapping[str, Any]


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
    """What the engine asks a datamodule's training loader for."""

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


class DataModule(LightningDataModule, abc.ABC):
    """Base of the datamodules: one dataset entry -> facts, training batches, eval tiles.

    Args:
        spec: the dataset's config entry (:class:`DatasetSpec`).
        request: what :meth:`train_dataloader` returns (optional: the engine passes a new
            request per epoch to :meth:`train_loader`).

    """

    #: Config kind names this class serves (``data.datasets[].kind``).
    kinds: ClassVar[tuple[str, ...]] = ()

    def __init__(self, spec: DatasetSpec, request: TrainLoaderRequest | None = None) -> None:
        super().__init__()
        self.spec = spec
        self.request = request

    @abc.abstractmethod
    def describe(self) -> KindInfo:
        """Return the dataset's facts that the checkpoint records."""

    @abc.abstractmethod
    def train_loader(self, request: TrainLoaderRequest) -> Iterable[dict[str, Any]]:
        """Return exactly ``request.num_batches`` training batches, a function of its seed."""

    @abc.abstractmethod
    def eval_samples(self, split: str) -> Iterator[EvalSample]:
        """Yield the whole evaluation images/tiles of ``split`` with every label on disk."""

    def train_dataloader(self) -> Iterable[dict[str, Any]]:
        """Lightning's hook: :meth:`train_loader` for the request given at construction."""
        if self.request is None:
            raise ValueError(
                f"{type(self).__name__} for '{self.spec.name}' was built without a "
                "TrainLoaderRequest; pass request= or call train_loader(request)."
            )
        return self.train_loader(self.request)


_REGISTRY: dict[str, type[DataModule]] = {}
_loaded_builtins = False


def register_datamodule[D: type[DataModule]](cls: D, overwrite: bool = False) -> D:
    """Make ``cls`` serve configs under each of ``cls.kinds`` (usable as a decorator)."""
    if not cls.kinds:
        raise ValueError(f"{cls.__name__} lists no kinds; set its 'kinds' class attribute")
    for kind in cls.kinds:
        if kind in _REGISTRY and not overwrite and _REGISTRY[kind] is not cls:
            raise ValueError(f"dataset kind '{kind}' is already registered")
    for kind in cls.kinds:
        _REGISTRY[kind] = cls
    return cls


def unregister_kind(name: str) -> None:
    """Remove a kind (tests use this to clean up their in-memory datamodules)."""
    _REGISTRY.pop(name, None)


def _load_builtins() -> None:
    global _loaded_builtins
    if _loaded_builtins:
        return
    _loaded_builtins = True
    for module in BUILTIN_DATAMODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:  # a real missing dependency inside the module
                raise


def available_kinds() -> list[str]:
    """Names of every registered kind."""
    _load_builtins()
    return sorted(_REGISTRY)


def datamodule_class(kind: str) -> type[DataModule]:
    """Look the datamodule class of a kind up by name.

    Raises:
        UserError: unknown name (the message lists the registered kinds).

    """
    _load_builtins()
    if kind not in _REGISTRY:
        raise UserError(
            f"Unknown dataset kind '{kind}'; use one of "
            f"{', '.join(sorted(_REGISTRY)) or '(none)'} in 'data.datasets[].kind'."
        )
    return _REGISTRY[kind]


def datamodule(spec: DatasetSpec, request: TrainLoaderRequest | None = None) -> DataModule:
    """Build the datamodule of one config entry (its ``kind`` picks the class)."""
    return datamodule_class(spec.kind)(spec, request)
