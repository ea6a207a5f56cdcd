"""Typed training configuration: YAML defaults, dotted overrides, clear errors.

A configuration is the :class:`TrainConfig` tree of dataclasses below, used as an
OmegaConf structured config. :func:`load_config` builds it from (in increasing priority)
the dataclass defaults, a YAML file (which may name a parent file with
``_base_: other.yaml``, resolved relative to itself; mappings merge key by key, lists are
replaced) and command-line overrides ``section.key=value`` whose values are parsed as
YAML (``trainer.max_steps=200``, ``loss.lambda_inter=1e-3``,
``model.encoder_weights=null``, ``data.datasets.0.root=/data/p``).

OmegaConf checks every key and type; this module turns its exceptions into one
:class:`~semimtl_geo.errors.UserError` sentence naming the dotted key and the valid
keys. Values convert as OmegaConf converts them: an int or a numeric string
(``"1e-3"``) for a float key, a number or bool for a string key (as its text), and
``true``/``false``, ``yes``/``no``, ``on``/``off`` or a number (0 = false) for a bool
key. Choices (``method``, ``mode``, ...) are checked by :func:`validate`; the methods
come from the registry (:mod:`semimtl_geo.training.methods`).

Config files are data: YAML is read with ``yaml.safe_load``, and OmegaConf's ``${...}``
interpolations and ``???`` markers are refused, so no resolver runs. The resolved
configuration is written beside the run's outputs (``config.yaml``) and stored in every
checkpoint, as timm does with its ``args.yaml``.

Defaults are the paper's hyper-parameters (section 4.1): G trained by SGD (momentum 0.9,
weight decay 1e-4, lr 0.01, poly decay 0.9), D by Adam (lr 1e-4, betas 0.9/0.99),
``w_seg = 1``, ``w_depth = 0.01``, ``lambda_intra = 1e-3``, ``lambda_inter = 1e-4``.
"""

import dataclasses
import math
import types
import typing
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException
from omegaconf.nodes import FloatNode

from semimtl_geo.atomic import atomic_write_text
from semimtl_geo.errors import UserError
from semimtl_geo.losses import INTER_MODES
from semimtl_geo.tasks import TASKS
from semimtl_geo.training.methods import get_method

PRECISIONS: tuple[str, ...] = ("auto", "32-true", "bf16-mixed", "16-mixed")
#: Generator optimisers (``optim.optimizer``).
OPTIMIZERS: tuple[str, ...] = ("sgd", "adamw")
BASE_KEY = "_base_"
#: Encoder output strides (8 and 16 dilate the last stages, 32 is the plain encoder).
OUTPUT_STRIDES: tuple[int, ...] = (8, 16, 32)
#: Normalisations of the generator (``model.norm``; the same list as
#: :data:`semimtl_geo.models.norm.NORMS`, kept here so that configs load without torch models).
NORMS: tuple[str, ...] = ("batch", "group", "domain")
#: Lightning accelerators a run can ask for (``trainer.accelerator``).
ACCELERATORS: tuple[str, ...] = ("auto", "cpu", "gpu", "cuda", "mps")


@dataclass
class DatasetConfig:
    """One training/evaluation dataset (a domain, class ``k`` of the discriminators).

    Attributes:
        name: unique name; domain labels follow the order of the list (first = 1).
        kind: registered dataset kind (see :mod:`semimtl_geo.data.datamodule`).
        root: folder the kind reads from (for ``isprs``: the ``prepare-isprs`` output).
        tasks: tasks whose labels are used for training on this dataset (``seg``,
            ``height``); the other task is unlabelled here (semi-supervised).
        options: kind-specific settings passed through untouched.

    """

    name: str = ""
    kind: str = "isprs"
    root: str = ""
    tasks: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelConfig:
    """Generator architecture (paper section 3.4: dilated ResNet101, PSP + height head)."""

    encoder: str = "resnet101"
    encoder_weights: str | None = "imagenet"
    output_stride: int = 8
    #: ``batch`` (the paper's BatchNorm), ``group`` (GroupNorm: no running statistics) or
    #: ``domain`` (BatchNorm with running statistics per training dataset, chosen by name
    #: at test time); :mod:`semimtl_geo.models.norm` says why.
    norm: str = "batch"
    #: Fuse the encoder's 1/4 features into the segmentation head (a DeepLabV3+-style
    #: decoder after the PSP module); the paper's PSP head has no skip (``false``).
    seg_skip: bool = False
    #: Channels of the discriminators' first convolution, doubled by each of the next three
    #: (the paper's D: 64, 128, 256, 512); the CPU demo uses 32.
    discriminator_width: int = 64
    #: Channels of the height head's first convolution, halved by each of its two
    #: up-sampling stages (256; the CPU demo uses 128, about 28 % less CPU per step).
    height_channels: int = 256
    #: Channels of the segmentation head's PSP fusion convolution (PSPNet: 512). With
    #: ``seg_skip`` its output is up-sampled to 1/4 and convolved there, so this width
    #: sets most of the head's cost: the CPU demo uses 128 (the head's forward and
    #: backward pass about 3x cheaper at 96 px).
    seg_channels: int = 512


@dataclass
class DataConfig:
    """Training data: datasets, crop size, per-dataset mini-batch size, augmentation.

    Augmentation follows PSPNet [65] as the paper does (section 4.1): every crop is
    randomly scaled by a factor drawn uniformly from ``scale_range`` (0.5-2.0; ``null``
    = no scaling) and, with ``augment``, flipped (ISPRS tiles: one of the 8 flips and
    90-degree rotations, since aerial views have no up; street views: horizontal flips).
    """

    datasets: list[DatasetConfig] = field(default_factory=list)
    crop_size: int = 384
    batch_size: int = 4
    num_workers: int = 2
    augment: bool = True
    scale_range: list[float] | None = field(default_factory=lambda: [0.5, 2.0])
    mean: list[float] | None = None
    std: list[float] | None = None


@dataclass
class OptimConfig:
    """Optimisers of section 4.1 (same for every method).

    Attributes:
        optimizer: the generator's optimiser: ``sgd`` (the paper's: momentum, weight
            decay, poly schedule) or ``adamw`` (``lr``, ``weight_decay`` and the same poly
            schedule; ``momentum`` is unused). AdamW converges in far fewer steps from a
            random initialisation; the CPU demo uses it, the paper's configs do not.
        warmup_steps: iterations over which the generator's learning rate rises linearly
            to ``lr`` before the poly decay (0 = none, the paper's;
            :func:`semimtl_geo.training.engine.poly_lambda`).
        d_poly_power: poly decay of the discriminators' learning rate over
            ``trainer.max_steps``, as AdaptSegNet [56] (whose discriminator the paper
            builds on) decays it with the generator's power 0.9; ``null`` keeps
            ``d_lr`` constant.

    """

    optimizer: str = "sgd"  # one of OPTIMIZERS
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    poly_power: float = 0.9
    warmup_steps: int = 0
    d_lr: float = 1e-4
    d_betas: list[float] = field(default_factory=lambda: [0.9, 0.99])
    d_poly_power: float | None = 0.9


@dataclass
class LossConfig:
    """Task weights (eq. 1) and adversarial weights (eq. 7).

    Attributes:
        lambda_da: weight of the AdaptSegNet target-domain adversarial loss of the DA
            baselines (0.001, AdaptSegNet's single-level value, equal to lambda_intra).
        berhu_ratio: BerHu threshold c as a fraction of the batch's max error.
        height_fill: value given to no-data (NaN) ground-truth height pixels when the
            ground-truth map is shown to a discriminator (0 = ground level).
        seg_class_weights: one weight per class for the supervised cross-entropy (eq. 1),
            in the dataset's class order; ``null`` = the paper's unweighted loss. The demo
            uses the square root of median-frequency balancing (Eigen & Fergus, ICCV 2015)
            of its training labels, so that cars and clutter (1-3 % of the pixels) are
            learnt within a few hundred CPU iterations.
        seg_lovasz_weight: weight of a Lovasz-softmax term (Berman et al., CVPR 2018; a
            surrogate of 1 - IoU, :func:`semimtl_geo.losses.lovasz_softmax_loss`) added to
            the supervised cross-entropy, scaled by ``w_seg`` like it; 0 = the paper's loss.

    """

    w_seg: float = 1.0
    w_height: float = 0.01
    lambda_intra: float = 0.001
    lambda_inter: float = 0.0001
    lambda_da: float = 0.001
    berhu_ratio: float = 0.2
    height_fill: float = 0.0
    seg_class_weights: list[float] | None = None
    seg_lovasz_weight: float = 0.0


@dataclass
class TrainerConfig:
    """Run length, hardware, logging.

    Attributes:
        max_steps: training iterations (one iteration = one mini-batch per dataset, one
            G step and one D step, Algorithm 1).
        steps_per_epoch: iterations between checkpoints; data loaders are rebuilt with a
            new seed each epoch, so resuming from a checkpoint is exact.
        precision: ``auto`` = bf16 autocast on GPU, fp32 on CPU; ``32-true``,
            ``bf16-mixed`` or ``16-mixed``. Mixed precision backpropagates the
            adversarial terms separately (:mod:`semimtl_geo.training.backward`);
            ``*-true`` half precisions are refused: their half-precision parameter
            gradients cannot hold terms 1e-4 below the supervised loss.
        grad_diagnostics: on every logging step (``log_every``), backpropagate each
            loss term on its own and log its gradient norm at the encoder
            (``train/grad_norm/...``); warns when an adversarial term's is zero.
        preview_every: iterations between PNG previews (0 = never).
        precise_bn_batches: after training, re-estimate the generator's BatchNorm running
            statistics with the final weights from this many training mini-batches per
            dataset ("precise BN", Wu & Johnson, "Rethinking 'Batch' in BatchNorm", 2021;
            per dataset with ``model.norm=domain``;
            :mod:`semimtl_geo.training.precise_bn`); 0 keeps the running averages of
            training (the paper's configs). ``model.pt`` holds the re-estimated
            statistics; ``checkpoints/last.ckpt`` keeps training's, so ``--resume``
            continues training exactly.
        cpu_threads: torch intra-op threads (``None`` = torch's default); 1 is fastest on a
            CPU shared with other jobs, where threads otherwise thrash.
        devices: processes (GPUs, or CPU processes) per machine.
        num_nodes: machines; with ``devices`` it gives ``num_nodes x devices`` DDP
            processes, started by ``torchrun`` or SLURM's ``srun`` (Lightning reads their
            environment variables).

    """

    max_steps: int = 20000
    steps_per_epoch: int = 500
    accelerator: str = "auto"
    devices: int = 1
    num_nodes: int = 1
    precision: str = "auto"
    channels_last: bool = False
    log_every: int = 10
    grad_diagnostics: bool = True
    preview_every: int = 500
    precise_bn_batches: int = 0
    progress_bar: bool = True
    cpu_threads: int | None = None


@dataclass
class EvalConfig:
    """Full-tile sliding-window evaluation settings (used by ``semimtl-geo evaluate``).

    Attributes:
        min_height: threshold (metres) of the *robust* height metrics, reported in a
            separate, labelled table: AbsRel and delta_i over references above it. The
            paper's AbsRel and delta_i (following Eigen et al.) count every valid
            reference > 0, ground pixels a few mm high included, which is why its AbR
            values are 1.3-6.9; that is the main table. RMSE uses every valid pixel.

    """

    split: str = "test"
    patch_size: int = 512
    overlap: float = 0.5
    batch_size: int = 4
    min_height: float = 0.5


@dataclass
class TrainConfig:
    """Everything a training run needs; see the module docstring for loading rules."""

    #: A registered method (:mod:`semimtl_geo.training.methods`); checked by :func:`validate`.
    method: str = "semimtl"
    #: Inter-task discriminator mode, one of :data:`~semimtl_geo.losses.INTER_MODES`.
    mode: str = "m2"
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (written to ``config.yaml`` and checkpoints)."""
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------- loading


def _type_name(tp: Any) -> str:
    """Annotation as a user reads it: ``int``, ``list of float | null``, ``mapping``."""
    origin = get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        return " | ".join(_type_name(a) for a in get_args(tp))
    if origin is list:
        return f"list of {_type_name(get_args(tp)[0])}"
    if origin is dict or dataclasses.is_dataclass(tp):
        return "mapping"
    return "null" if tp is type(None) else getattr(tp, "__name__", str(tp))


def _expected(exc: OmegaConfBaseException) -> str:
    """Describe what the refused key holds: its field's annotation, or its list's items'."""
    if dataclasses.is_dataclass(exc.object_type):
        hint = typing.get_type_hints(exc.object_type).get(str(exc.key))
        if hint is not None:
            return _type_name(hint)
    for tp in (exc.ref_type, *get_args(exc.ref_type)):  # a list item: Optional[List[float]]
        if get_origin(tp) is list:
            return _type_name(get_args(tp)[0])
    return "a number, string, list or mapping"


@contextmanager
def _named_errors(prefix: str = "") -> Iterator[None]:
    """Turn OmegaConf's exceptions into one sentence naming the dotted key (under ``prefix``)."""
    try:
        yield
    except OmegaConfBaseException as exc:
        key = str(exc.full_key or "")
        if prefix and key:
            key = f"{prefix}{'' if key.startswith('[') else '.'}{key}"
        key = key or prefix or str(exc.key)
        if isinstance(exc, ConfigKeyError | ConfigAttributeError) and dataclasses.is_dataclass(
            exc.object_type
        ):
            names = ", ".join(f.name for f in dataclasses.fields(exc.object_type))
            raise UserError(f"Unknown config key '{key}'; valid keys here are: {names}.") from None
        raise UserError(
            f"Config key '{key}' must be {_expected(exc)}, got {exc.value!r}; fix it in the "
            "YAML file or the override."
        ) from None


def _plain(value: Any, key: str = "") -> Any:
    """Refuse OmegaConf's ``${...}`` interpolations and ``???`` markers: configs are data.

    OmegaConf would resolve an interpolation (resolvers read environment variables and
    can be registered by any imported library) and silently keep the previous value for
    ``???``; a config file is only ever read as the values it holds.
    """
    if isinstance(value, str) and ("${" in value or value == "???"):
        raise UserError(
            f"Config key '{key}' holds {value!r}, which OmegaConf would resolve; configs are "
            "plain data (no '${...}' or '???'), so write the value itself."
        )
    if isinstance(value, dict):
        for k, v in value.items():
            _plain(v, f"{key}.{k}" if key else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _plain(v, f"{key}[{i}]")
    return value


def _assign(node: DictConfig | ListConfig, data: dict[Any, Any], where: str = "") -> None:
    """Merge ``data`` into ``node``: mappings merge key by key, lists and values replace.

    OmegaConf checks and converts every value. Walking the mappings here rather than in
    ``OmegaConf.merge`` keeps the dotted key in every error: OmegaConf's merge loses it for
    a value of the wrong shape (a mapping for ``data.scale_range``) and for keys inside the
    items of a list (``data.datasets[0].bogus``). A mapping merged into a list addresses
    its items by index (the override ``data.datasets.0.root=...``).
    """
    in_list = isinstance(node, ListConfig)
    for key, value in data.items():
        if in_list and not (str(key).isdigit() and int(key) < len(node)):
            raise UserError(
                f"Config key '{where}' is a {len(node)}-item list indexed from 0, so it has no "
                f"item '{key}'."
            )
        key = int(key) if in_list else key
        child = node[key] if in_list else node.get(key)
        path = f"{where}[{key}]" if in_list else f"{where}.{key}".lstrip(".")
        if isinstance(value, dict) and isinstance(child, DictConfig | ListConfig):
            _assign(child, value, path)
        elif isinstance(value, list) and isinstance(child, ListConfig) and not in_list:
            # The list is replaced by typed default items, then each mapping is merged into
            # its item, so that keys inside items keep their path.
            node.merge_with({key: [{} if isinstance(v, dict) else v for v in value]})
            _assign(node[key], {i: v for i, v in enumerate(value) if isinstance(v, dict)}, path)
        else:
            if (isinstance(value, int) and not isinstance(value, bool) and not in_list
                    and isinstance(node._get_node(key), FloatNode)):
                value = float(value)  # `loss.w_seg=1`: OmegaConf warns on converting it
            node[key] = value


def dataset_from_dict(data: dict[str, Any], key: str = "dataset") -> DatasetConfig:
    """Validate one dataset entry (e.g. read back from a checkpoint's config)."""
    node = OmegaConf.structured(DatasetConfig)
    with _named_errors(key):
        _assign(node, _plain(data, key), key)
        return OmegaConf.to_object(node)


def _merge(cfg: DictConfig, data: dict[str, Any]) -> None:
    """Merge one raw mapping (a saved config, a YAML file, an override) into ``cfg``."""
    with _named_errors():
        _assign(cfg, _plain(data))


def read_yaml_config(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a YAML config file (``yaml.safe_load``), following ``_base_`` parents.

    A parent is resolved relative to the file and merged under it (mappings merge key by
    key, lists are replaced). Relative dataset ``root`` paths stay as written (they are
    resolved against the working directory when the run starts).
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"Config file '{path}' does not exist; pass an existing YAML file.")
    if path.resolve() in _seen:
        raise UserError(f"Config file '{path}' includes itself through '{BASE_KEY}'.")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or type(exc).__name__
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        raise UserError(
            f"Config file '{path}' is not valid YAML ({where}{problem}); fix it there."
        ) from None
    if not isinstance(data, dict):
        raise UserError(
            f"Config file '{path}' must hold a mapping of keys, not {type(data).__name__}."
        )
    base = data.pop(BASE_KEY, None)
    if base is not None:
        parent = read_yaml_config(path.parent / str(base), (*_seen, path.resolve()))
        with _named_errors():
            data = OmegaConf.to_container(OmegaConf.merge(parent, _plain(data)))
    return data


def _apply_override(cfg: DictConfig, text: str) -> None:
    """Apply one ``key=value`` (value parsed by ``yaml.safe_load``) to ``cfg``.

    A numeric key part indexes a list (``data.datasets.0.root=/data/p``); mappings given
    as values merge into the mapping there, lists replace the list.
    """
    key, eq, raw = text.partition("=")
    parts = [p for p in key.strip().split(".") if p]
    if not eq or not parts:
        raise UserError(
            f"Override '{text}' is not of the form key=value (e.g. trainer.max_steps=100)."
        )
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    for part in reversed(parts):
        value = {part: value}
    _merge(cfg, value)


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """Validate a raw mapping into a :class:`TrainConfig` (errors name the dotted key)."""
    return load_config(base=data)


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    base: dict[str, Any] | None = None,
) -> TrainConfig:
    """Load defaults <- ``base`` mapping <- YAML ``path`` <- ``overrides``; then validate."""
    cfg = OmegaConf.structured(TrainConfig)
    _merge(cfg, base or {})
    if path is not None:
        _merge(cfg, read_yaml_config(path))
    for text in overrides:
        _apply_override(cfg, text)
    with _named_errors():
        out = OmegaConf.to_object(cfg)
    validate(out)
    return out


def validate(cfg: TrainConfig) -> None:
    """Cross-field checks that types alone cannot express."""
    method = get_method(cfg.method)  # unknown names: the error lists the registered ones
    for key, value, choices in (
        ("mode", cfg.mode, INTER_MODES),
        ("optim.optimizer", cfg.optim.optimizer, OPTIMIZERS),
    ):
        if value not in choices:
            raise UserError(
                f"Config key '{key}' must be one of {', '.join(choices)}, got {value!r}."
            )
    if not cfg.data.datasets:
        raise UserError("Config key 'data.datasets' is empty; list at least one dataset.")
    names = [d.name for d in cfg.data.datasets]
    for i, ds in enumerate(cfg.data.datasets):
        if not ds.name:
            raise UserError(
                f"Config key 'data.datasets[{i}].name' is empty; give the dataset a name."
            )
        bad = [t for t in ds.tasks if t not in TASKS]
        if bad:
            raise UserError(
                f"Config key 'data.datasets[{i}].tasks' has unknown task(s) {bad}; use "
                f"{', '.join(TASKS)}."
            )
    if len(set(names)) != len(names):
        raise UserError(
            f"Config key 'data.datasets' repeats a dataset name ({names}); names must be unique."
        )
    for key, value in (
        ("data.crop_size", cfg.data.crop_size),
        ("data.batch_size", cfg.data.batch_size),
        ("trainer.max_steps", cfg.trainer.max_steps),
        ("trainer.steps_per_epoch", cfg.trainer.steps_per_epoch),
        ("trainer.devices", cfg.trainer.devices),
        ("trainer.num_nodes", cfg.trainer.num_nodes),
        ("eval.patch_size", cfg.eval.patch_size),
        ("model.discriminator_width", cfg.model.discriminator_width),
        ("model.height_channels", cfg.model.height_channels),
        ("model.seg_channels", cfg.model.seg_channels),
    ):
        if value <= 0:
            raise UserError(f"Config key '{key}' must be positive, got {value}.")
    if not 0 <= cfg.seed < 2**32:
        raise UserError(f"Config key 'seed' must be in [0, 2**32), got {cfg.seed}.")
    if cfg.model.output_stride not in OUTPUT_STRIDES:
        raise UserError(
            f"Config key 'model.output_stride' must be one of "
            f"{', '.join(map(str, OUTPUT_STRIDES))}, got {cfg.model.output_stride}."
        )
    if cfg.model.norm not in NORMS:
        raise UserError(
            f"Config key 'model.norm' must be one of {', '.join(NORMS)} (batch = the paper's "
            f"BatchNorm, group = GroupNorm, domain = BatchNorm statistics per dataset), got "
            f"{cfg.model.norm!r}."
        )
    if cfg.trainer.accelerator not in ACCELERATORS:
        raise UserError(
            f"Config key 'trainer.accelerator' must be one of {', '.join(ACCELERATORS)}, "
            f"got {cfg.trainer.accelerator!r}."
        )
    for key, value in (
        ("optim.lr", cfg.optim.lr),
        ("optim.d_lr", cfg.optim.d_lr),
        ("loss.berhu_ratio", cfg.loss.berhu_ratio),
    ):
        if not value > 0:
            raise UserError(f"Config key '{key}' must be positive, got {value}.")
    for key, value in (
        ("optim.momentum", cfg.optim.momentum),
        ("optim.weight_decay", cfg.optim.weight_decay),
        ("optim.poly_power", cfg.optim.poly_power),
        ("loss.w_seg", cfg.loss.w_seg),
        ("loss.w_height", cfg.loss.w_height),
        ("loss.lambda_intra", cfg.loss.lambda_intra),
        ("loss.lambda_inter", cfg.loss.lambda_inter),
        ("loss.lambda_da", cfg.loss.lambda_da),
        ("data.num_workers", cfg.data.num_workers),
        ("trainer.preview_every", cfg.trainer.preview_every),
        ("trainer.precise_bn_batches", cfg.trainer.precise_bn_batches),
        ("optim.warmup_steps", cfg.optim.warmup_steps),
        ("eval.min_height", cfg.eval.min_height),
    ):
        if not value >= 0:  # also refuses NaN
            raise UserError(f"Config key '{key}' must be zero or positive, got {value}.")
    if not cfg.optim.momentum < 1:
        raise UserError(f"Config key 'optim.momentum' must be below 1, got {cfg.optim.momentum}.")
    if cfg.trainer.log_every <= 0:
        raise UserError(f"Config key 'trainer.log_every' must be positive, got "
                        f"{cfg.trainer.log_every}.")
    if cfg.trainer.cpu_threads is not None and cfg.trainer.cpu_threads <= 0:
        raise UserError(
            f"Config key 'trainer.cpu_threads' must be null or positive, got "
            f"{cfg.trainer.cpu_threads}."
        )
    if not 0 <= cfg.eval.overlap < 1:
        raise UserError(f"Config key 'eval.overlap' must be in [0, 1), got {cfg.eval.overlap}.")
    if cfg.trainer.precision not in PRECISIONS:
        why = (
            " (half-precision parameters cannot hold the adversarial gradients, 1e-4 of the "
            "supervised ones; use bf16-mixed)"
            if "true" in cfg.trainer.precision and cfg.trainer.precision != "32-true"
            else ""
        )
        raise UserError(
            f"Config key 'trainer.precision' must be one of {', '.join(PRECISIONS)}, got "
            f"{cfg.trainer.precision!r}{why}."
        )
    scales = cfg.data.scale_range
    if scales is not None and (len(scales) != 2 or not 0 < scales[0] <= scales[1]):
        raise UserError(
            f"Config key 'data.scale_range' must be null or two positive numbers [low, high] "
            f"with low <= high, e.g. [0.5, 2.0]; got {scales}."
        )
    if cfg.optim.d_poly_power is not None and cfg.optim.d_poly_power < 0:
        raise UserError("Config key 'optim.d_poly_power' must be null or >= 0.")
    if len(cfg.optim.d_betas) != 2 or not all(0 <= b < 1 for b in cfg.optim.d_betas):
        raise UserError(
            "Config key 'optim.d_betas' must hold two numbers in [0, 1), e.g. [0.9, 0.99]."
        )
    weights = cfg.loss.seg_class_weights
    if weights is not None and (
        not weights or not all(math.isfinite(w) and w > 0 for w in weights)
    ):
        raise UserError(
            "Config key 'loss.seg_class_weights' must be null or one positive number per "
            f"class, got {list(weights)}."
        )
    lovasz = cfg.loss.seg_lovasz_weight
    if not (isinstance(lovasz, (int, float)) and math.isfinite(lovasz) and lovasz >= 0):
        raise UserError(
            f"Config key 'loss.seg_lovasz_weight' must be a number >= 0 (0 = off), got {lovasz!r}."
        )
    for key in ("mean", "std"):
        value = getattr(cfg.data, key)
        if value is not None and not value:
            raise UserError(f"Config key 'data.{key}' must be null or one value per band.")
    if cfg.data.std is not None and any(v <= 0 for v in cfg.data.std):
        raise UserError("Config key 'data.std' must be positive.")
    method.plan(cfg)  # method-specific feasibility (it needs the datasets' tasks)


def save_config(cfg: TrainConfig, path: str | Path) -> Path:
    """Write the resolved config as YAML atomically."""
    return atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
