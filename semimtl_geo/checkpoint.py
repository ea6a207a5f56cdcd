"""The model checkpoint contract shared by train, evaluate, predict and export.

A checkpoint is a ``torch.save`` file holding a dict with the key ``"semimtl_geo"``::

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
      },
      "config": {...resolved training config...},
      "state_dict": {...generator weights...},
    }

Lightning checkpoints written by the training engine carry the same dict under the
same key (plus Lightning's own state for ``--resume``), so either file can be passed
wherever a checkpoint is expected.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from semimtl_geo.atomic import atomic_output
from semimtl_geo.classes import IGNORE_INDEX, ISPRS_CLASSES, ClassTable
from semimtl_geo.errors import UserError
from semimtl_geo.models.multitask import MultiTaskNet

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
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelMeta":
        """Inverse of :meth:`to_dict` (unknown keys are ignored for forward compatibility)."""
        kwargs = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        if "classes" in kwargs:
            kwargs["classes"] = ClassTable.from_dict(kwargs["classes"])
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


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to a temporary file in the same folder, then rename over ``path``."""
    with atomic_output(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def save_model_checkpoint(
    path: str | Path,
    model: MultiTaskNet,
    meta: ModelMeta,
    config: dict[str, Any] | None = None,
) -> Path:
    """Write a standalone model checkpoint atomically."""
    return atomic_torch_save({CHECKPOINT_KEY: checkpoint_payload(model, meta, config)}, path)


def load_model_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> LoadedModel:
    """Rebuild the generator of a semimtl-geo or Lightning checkpoint, in eval mode.

    Raises:
        UserError: missing, unreadable or foreign checkpoint files.

    """
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"Checkpoint '{path}' does not exist; "
            "pass the .ckpt/.pt file written by 'semimtl-geo train'."
        )
    try:
        raw = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:
        raise UserError(
            f"Checkpoint '{path}' could not be read ({type(exc).__name__}); "
            "it is corrupt or not a torch file."
        ) from None
    payload = raw.get(CHECKPOINT_KEY) if isinstance(raw, dict) else None
    if not isinstance(payload, dict) or "model" not in payload:
        raise UserError(
            f"Checkpoint '{path}' was not written by semimtl-geo (no '{CHECKPOINT_KEY}' entry); "
            "pass a checkpoint from 'semimtl-geo train'."
        )
    cfg = dict(payload["model"])
    model = MultiTaskNet(
        encoder_name=cfg["encoder_name"],
        in_channels=int(cfg["in_channels"]),
        num_classes=int(cfg["num_classes"]),
        tasks=cfg["tasks"],
        encoder_weights=None,
        output_stride=int(cfg.get("output_stride", 8)),
    )
    model.load_state_dict(payload["state_dict"])
    model.eval()
    return LoadedModel(
        model, ModelMeta.from_dict(payload.get("meta", {})), payload.get("config", {}), path
    )
