"""Typed training configuration: YAML defaults, dotted overrides, clear errors.

A configuration is the :class:`TrainConfig` tree of dataclasses below. It is built by
:func:`load_config` from (in increasing priority) the dataclass defaults, a YAML file
(which may name a parent file with ``_base_: other.yaml``, resolved relative to itself)
and command-line overrides ``section.key=value`` whose values are parsed as YAML
(``trainer.max_steps=200``, ``loss.lambda_inter=1e-3``, ``model.encoder_weights=null``).

Every key is checked: an unknown key or a value of the wrong type raises
:class:`~semimtl_geo.errors.UserError` naming the dotted key and the valid choices.
The resolved configuration is written beside the run's outputs (``config.yaml``) and
stored in every checkpoint, as timm does with its ``args.yaml``.

Defaults are the paper's hyper-parameters (section 4.1): G trained by SGD (momentum 0.9,
weight decay 1e-4, lr 0.01, poly decay 0.9), D by Adam (lr 1e-4, betas 0.9/0.99),
``w_seg = 1``, ``w_depth = 0.01``, ``lambda_intra = 1e-3``, ``lambda_inter = 1e-4``.
"""

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml

from semimtl_geo.atomic import atomic_write_text
from semimtl_geo.errors import UserError
from semimtl_geo.losses import INTER_MODES
from semimtl_geo.tasks import TASKS
from semimtl_geo.training.methods import get_method

PRECISIONS: tuple[str, ...] = ("auto", "32-true", "bf16-mixed", "16-mixed")
BASE_KEY = "_base_"
#: Encoder output strides (8 and 16 dilate the last stages, 32 is the plain encoder).
OUTPUT_STRIDES: tuple[int, ...] = (8, 16, 32)
#: Lightning accelerators a run can ask for (``trainer.accelerator``).
ACCELERATORS: tuple[str, ...] = ("auto", "cpu", "gpu", "cuda", "mps")


@dataclass
class DatasetConfig:
    """One training/evaluation dataset (a domain, class ``k`` of the discriminators).

    Attributes:
        name: unique name; domain labels follow the order of the list (first = 1).
        kind: registered dataset kind (see :mod:`semimtl_geo.training.registry`).
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
        d_poly_power: poly decay of the discriminators' learning rate over
            ``trainer.max_steps``, as AdaptSegNet [56] (whose discriminator the paper
            builds on) decays it with the generator's power 0.9; ``null`` keeps
            ``d_lr`` constant.

    """

    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    poly_power: float = 0.9
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

    """

    w_seg: float = 1.0
    w_height: float = 0.01
    lambda_intra: float = 0.001
    lambda_inter: float = 0.0001
    lambda_da: float = 0.001
    berhu_ratio: float = 0.2
    height_fill: float = 0.0


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
    mode: Literal["m1", "m2", "m3"] = "m2"
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


# --------------------------------------------------------------------------- parsing


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (types.UnionType, typing.Union):
        return " | ".join(_type_name(a) for a in get_args(tp))
    if origin is list:
        return f"list of {_type_name(get_args(tp)[0])}"
    if origin is dict:
        return "mapping"
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "mapping"
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it converted (int -> float)."""
    origin = get_origin(tp)
    bad = UserError(
        f"Config key '{key}' must be {_type_name(tp)}, got {value!r}; fix it in the YAML file "
        "or the override."
    )
    if origin is Literal:
        if value not in get_args(tp):
            raise UserError(
                f"Config key '{key}' must be one of {', '.join(map(str, get_args(tp)))}, "
                f"got {value!r}."
            )
        return value
    if origin in (types.UnionType, typing.Union):
        args = get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise bad
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key)
            except UserError:
                continue
        raise bad
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise bad
        return _build(tp, value, key)
    if origin is list:
        if not isinstance(value, list | tuple):
            raise bad
        (item,) = get_args(tp)
        return [_convert(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise bad
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad
        return value
    if tp is Any:
        return value
    raise TypeError(f"unsupported config annotation {tp!r} for {key}")  # programming error


def _build(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            raise UserError(
                f"Unknown config key '{dotted}'; valid keys here are: {', '.join(names)}."
            )
        kwargs[key] = _convert(value, hints[key], dotted)
    return cls(**kwargs)


def dataset_from_dict(data: dict[str, Any], key: str = "dataset") -> DatasetConfig:
    """Validate one dataset entry (e.g. read back from a checkpoint's config)."""
    return _build(DatasetConfig, data, key)


def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def read_yaml_config(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a YAML config file, following ``_base_`` parents (relative to the file).

    Relative dataset ``root`` paths stay as written (they are resolved against the
    working directory when the run starts).
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
        data = _deep_merge(parent, data)
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b.c=value`` into its key path and YAML-parsed value."""
    if "=" not in text:
        raise UserError(
            f"Override '{text}' is not of the form key=value (e.g. trainer.max_steps=100)."
        )
    key, raw = text.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise UserError(f"Override '{text}' has an empty key.")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return parts, value


def apply_overrides(data: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Apply dotted ``key=value`` overrides to a raw config mapping (a copy is returned).

    A numeric path component indexes a list, e.g. ``data.datasets.0.root=/data/p``.
    """
    data = _deep_merge({}, data)
    for text in overrides:
        parts, value = parse_override(text)
        node: Any = data
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise UserError(
                        f"Override '{text}': '{part}' is not an index of the {len(node)}-item "
                        f"list '{'.'.join(parts[:i])}'."
                    )
                if last:
                    node[int(part)] = value
                else:
                    node[int(part)] = (
                        _deep_merge({}, node[int(part)])
                        if isinstance(node[int(part)], dict)
                        else node[int(part)]
                    )
                    node = node[int(part)]
                continue
            if not isinstance(node, dict):
                raise UserError(f"Override '{text}': '{'.'.join(parts[:i])}' is not a mapping.")
            if last:
                node[part] = value
            else:
                child = node.get(part)
                if isinstance(child, list):
                    node[part] = list(child)
                elif isinstance(child, dict):
                    node[part] = dict(child)
                else:
                    node[part] = {}
                node = node[part]
    return data


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """Validate a raw mapping into a :class:`TrainConfig` (errors name the dotted key)."""
    cfg = _build(TrainConfig, data)
    validate(cfg)
    return cfg


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    base: dict[str, Any] | None = None,
) -> TrainConfig:
    """Load defaults <- ``base`` mapping <- YAML ``path`` <- ``overrides``; then validate."""
    data: dict[str, Any] = dict(base or {})
    if path is not None:
        data = _deep_merge(data, read_yaml_config(path))
    data = apply_overrides(data, list(overrides))
    return config_from_dict(data)


def validate(cfg: TrainConfig) -> None:
    """Cross-field checks that types alone cannot express."""
    method = get_method(cfg.method)  # unknown names: the error lists the registered ones
    if cfg.mode not in INTER_MODES:  # pragma: no cover - guarded by Literal
        raise UserError(f"Config key 'mode' must be one of {INTER_MODES}.")
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
