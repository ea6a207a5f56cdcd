"""The model checkpoint contract shared by train, evaluate, predict and export.

A checkpoint holds a dict with the key ``"semimtl_geo"``::

    {
      "format": 1,
      "model": {...MultiTaskNet.config()...},          # rebuilds the generator
      "meta": {                                         # everything inference needs
        "classes": {"names": [...], "colors": [[r, g, b], ...]},
        "bands": ["IR", "R", "G"],                      # band order the model expects
        "mean": [...], "std": [...],                    # on pixel values / 255
        "gsd": 0.09,                                    # metres per pixel at training
        "height_scale": 30.0,                           # metres per nDSM unit
        "height_unit": "m",
        "patch_size": 512, "overlap": 0.5,
        "ignore_index": 255,
        "input_dtype": "uint8", "input_range": [0, 255],   # training pixels (absent in
      },                                                  # older files: uint8 0-255)
      "config": {...resolved training config...},
      "state_dict": {...generator weights...},
    }

Lightning checkpoints written by the training engine carry the same dict under the
same key (plus Lightning's own state for ``--resume``), so either file can be passed
wherever a checkpoint is expected. Both are stored in the code-free file format of
:mod:`semimtl_geo.checkpoint_file` (safetensors tensors + JSON structure): opening one
never runs code from it.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from semimtl_geo.checkpoint_file import read_checkpoint_file, write_checkpoint_file
from semimtl_geo.classes import IGNORE_INDEX, ISPRS_CLASSES, ClassTable
from semimtl_geo.errors import UserError
from semimtl_geo.models.multitask import MultiTaskNet
from semimtl_geo.models.norm import NORMS
from semimtl_geo.tasks import TASKS

CHECKPOINT_KEY = "semimtl_geo"
CHECKPOINT_FORMAT = 1


@dataclass
class ModelMeta:
    """What inference needs to know about a trained model besides its weights."""

    classes: ClassTable = ISPRS_CLASSES
    bands: list[str] = field(default_factory=lambda: ["IR", "R", "G"])
    mean: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    std: list[float] = field(default_factory=lambda: [0.25, 0.25, 0.25])
    gsd: float | None = 0.09
    height_scale: float = 1.0
    height_unit: str = "m"
    patch_size: int = 512
    overlap: float = 0.5
    ignore_index: int = IGNORE_INDEX
    #: dtype and value range of the pixels the model was trained on; inputs of another
    #: dtype are refused unless rescaled (:mod:`semimtl_geo.inference.scaling`).
    #: Checkpoints written before these fields existed were all trained on uint8 0-255.
    input_dtype: str = "uint8"
    input_range: list[float] = field(default_factory=lambda: [0.0, 255.0])

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {
            "classes": self.classes.to_dict(),
            "bands": list(self.bands),
            "mean": [float(v) for v in self.mean],
            "std": [float(v) for v in self.std],
            "gsd": None if self.gsd is None else float(self.gsd),
            "height_scale": float(self.height_scale),
            "height_unit": self.height_unit,
            "patch_size": int(self.patch_size),
            "overlap": float(self.overlap),
            "ignore_index": int(self.ignore_index),
            "input_dtype": str(self.input_dtype),
            "input_range": [float(v) for v in self.input_range],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelMeta":
        """Inverse of :meth:`to_dict` (unknown keys are ignored for forward compatibility)."""
        kwargs = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        if "classes" in kwargs:
            kwargs["classes"] = ClassTable.from_dict(kwargs["classes"])
        if "input_range" in kwargs:
            low, high = (float(v) for v in kwargs["input_range"])
            kwargs["input_range"] = [low, high]
        return cls(**kwargs)


@dataclass
class LoadedModel:
    """A generator rebuilt from a checkpoint, with its metadata and training config."""

    model: MultiTaskNet
    meta: ModelMeta
    config: dict[str, Any]
    path: Path | None = None


def checkpoint_payload(
    model: MultiTaskNet, meta: ModelMeta, config: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Build the dict stored under :data:`CHECKPOINT_KEY`."""
    return {
        "format": CHECKPOINT_FORMAT,
        "model": model.config(),
        "meta": meta.to_dict(),
        "config": config or {},
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }


def save_model_checkpoint(
    path: str | Path,
    model: MultiTaskNet,
    meta: ModelMeta,
    config: dict[str, Any] | None = None,
) -> Path:
    """Write a standalone model checkpoint atomically."""
    return write_checkpoint_file({CHECKPOINT_KEY: checkpoint_payload(model, meta, config)}, path)




def _invalid(path: Path, detail: str) -> UserError:
    return UserError(
        f"Checkpoint '{path}' is not a valid semimtl-geo model ({detail}); it is damaged or "
        "was written by an incompatible semimtl-geo version."
    )


def _check_model_config(cfg: Any, path: Path) -> dict[str, Any]:
    """Validate the ``model`` entry (types only: the file is untrusted input)."""
    if not isinstance(cfg, dict):
        raise _invalid(path, "'model' is not a mapping")
    ints = {"in_channels": cfg.get("in_channels"), "num_classes": cfg.get("num_classes"),
            "output_stride": cfg.get("output_stride", 8),
            "height_channels": cfg.get("height_channels", 256),
            "seg_channels": cfg.get("seg_channels", 512)}
    for name, value in ints.items():
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise _invalid(path, f"model '{name}' is {value!r}")
    if not isinstance(cfg.get("encoder_name"), str):
        raise _invalid(path, "model 'encoder_name' is missing")
    tasks = cfg.get("tasks")
    if (not isinstance(tasks, (list, tuple)) or not tasks
            or not all(isinstance(t, str) and t in TASKS for t in tasks)):
        raise _invalid(path, f"model 'tasks' is {tasks!r}")
    norm = cfg.get("norm", "batch")  # checkpoints before model.norm existed: BatchNorm
    if norm not in NORMS:
        raise _invalid(path, f"model 'norm' is {norm!r}")
    domains = cfg.get("domains")
    if norm == "domain" and (
        not isinstance(domains, list) or not domains
        or not all(isinstance(d, str) and d for d in domains) or len(set(domains)) != len(domains)
    ):
        raise _invalid(path, f"model 'domains' is {domains!r}")
    seg_skip = cfg.get("seg_skip", False)  # checkpoints before model.seg_skip: plain PSP
    if not isinstance(seg_skip, bool):
        raise _invalid(path, f"model 'seg_skip' is {seg_skip!r}")
    return {**ints, "encoder_name": cfg["encoder_name"], "tasks": list(tasks), "norm": norm,
            "domains": list(domains) if norm == "domain" else None, "seg_skip": seg_skip}


#: Files a run folder passed as a checkpoint stands for, in order of preference.
RUN_DIR_CHECKPOINTS = ("model.pt", "checkpoints/last.ckpt")


def resolve_checkpoint_path(path: str | Path) -> Path:
    """Return the checkpoint file a path stands for: a run folder means its ``model.pt``.

    A folder without ``model.pt`` falls back to ``checkpoints/last.ckpt`` (a run still
    training). Files are returned unchanged.

    Raises:
        UserError: a folder holding neither file.

    """
    path = Path(path)
    if not path.is_dir():
        return path
    for name in RUN_DIR_CHECKPOINTS:
        if (path / name).is_file():
            return path / name
    raise UserError(
        f"Folder '{path}' holds no model.pt or checkpoints/last.ckpt; pass a run folder "
        "written by 'semimtl-geo train' or the checkpoint file itself."
    )


def load_model_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu", domain: str | None = None
) -> LoadedModel:
    """Rebuild the generator of a semimtl-geo or Lightning checkpoint, in eval mode.

    ``domain`` picks the training dataset whose normalisation statistics a
    ``model.norm=domain`` model uses (default: its first dataset); other models ignore it.

    The file is read with :func:`~semimtl_geo.checkpoint_file.read_checkpoint_file`
    (nothing is unpickled) and its content is validated before anything is built.
    ``path`` may be a run folder (its ``model.pt`` is read, see
    :func:`resolve_checkpoint_path`).

    Raises:
        UserError: missing, unreadable, pickled, foreign or damaged checkpoint files; a
            ``domain`` the model does not know.

    """
    path = resolve_checkpoint_path(path)
    payload = read_checkpoint_file(path, device=map_location, key=CHECKPOINT_KEY)
    if not isinstance(payload, dict) or "model" not in payload:
        raise UserError(
            f"Checkpoint '{path}' was not written by semimtl-geo (no '{CHECKPOINT_KEY}' entry); "
            "pass a checkpoint from 'semimtl-geo train'."
        )
    version = payload.get("format", CHECKPOINT_FORMAT)
    if not isinstance(version, int) or version > CHECKPOINT_FORMAT:
        raise UserError(
            f"Checkpoint '{path}' has payload format {version!r}, newer than this semimtl-geo "
            f"reads ({CHECKPOINT_FORMAT}); upgrade semimtl-geo."
        )
    cfg = _check_model_config(payload["model"], path)
    state = payload.get("state_dict")
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise _invalid(path, "'state_dict' is not a mapping of names to tensors")
    meta_dict, config = payload.get("meta", {}), payload.get("config", {})
    if not isinstance(meta_dict, dict) or not isinstance(config, dict):
        raise _invalid(path, "'meta' or 'config' is not a mapping")
    try:
        meta = ModelMeta.from_dict(meta_dict)
    except (TypeError, ValueError, KeyError) as exc:
        raise _invalid(path, f"bad 'meta': {exc}") from None
    try:
        model = MultiTaskNet(
            encoder_name=cfg["encoder_name"],
            in_channels=cfg["in_channels"],
            num_classes=cfg["num_classes"],
            tasks=cfg["tasks"],
            encoder_weights=None,
            output_stride=cfg["output_stride"],
            norm=cfg["norm"],
            domains=cfg["domains"],
            seg_skip=cfg["seg_skip"],
            height_channels=cfg["height_channels"],
            seg_channels=cfg["seg_channels"],
        )
    except UserError as exc:  # e.g. an encoder this installation does not know
        raise _invalid(path, str(exc).split(";")[0].rstrip(".")) from None
    except Exception as exc:  # smp's own errors, e.g. an unsupported output stride
        raise _invalid(path, f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}") from None
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:160]
        raise _invalid(path, f"its weights do not fit its model: {detail}") from None
    model.eval()
    if domain is not None and not model.domains:
        raise UserError(
            f"Checkpoint '{path}' keeps no normalisation statistics per dataset "
            f"(model.norm={model.norm}); drop --domain."
        )
    model.select_domain(domain)
    return LoadedModel(model, meta, config, path)
