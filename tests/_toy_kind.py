"""A tiny in-memory dataset kind (a datamodule) for the training-engine tests.

Scenes are blocky class maps; pixel colour and height are functions of the class plus a
per-dataset appearance shift (two "domains"), so the tasks are learnable in a few steps.
Everything is a deterministic function of the request seed.
"""

import numpy as np
import torch

from semimtl_geo.classes import ISPRS_CLASSES
from semimtl_geo.data.datamodule import (
    DataModule,
    EvalSample,
    KindInfo,
    register_datamodule,
    unregister_kind,
)

KIND = "toy"
CLASS_HEIGHT = np.array([0.0, 0.8, 0.1, 0.5, 0.15, 0.3], dtype=np.float32)  # normalised


def scene(rng: np.random.Generator, size: int, shift: float, num_classes: int = 6, block: int = 8):
    """Blocky label map (``block`` px), uint8 image, normalised height (one NaN pixel)."""
    blocks = rng.integers(0, num_classes, size=(size // block + 1, size // block + 1))
    mask = np.kron(blocks, np.ones((block, block), dtype=np.int64))[:size, :size]
    base = np.stack(
        [(mask * 40 + 20) % 256, (mask * 90 + 60) % 256, (mask * 150 + 10) % 256]
    ).astype(np.float32)
    image = np.clip(
        base * (1 - shift) + 255 * shift * 0.5 + rng.normal(0, 6, base.shape), 0, 255
    ).astype(np.uint8)
    height = CLASS_HEIGHT[mask].copy()
    height[0, 0] = np.nan
    mask = mask.astype(np.uint8)
    mask[1, 1] = 255
    return image, mask, height


def describe(spec) -> KindInfo:
    return KindInfo(
        classes=ISPRS_CLASSES,
        bands=["IR", "R", "G"],
        mean=[0.5, 0.5, 0.5],
        std=[0.25, 0.25, 0.25],
        gsd=0.09,
        height_scale=float(spec.options.get("height_scale", 10.0)),
    )


def train_batches(spec, request):
    shift = float(spec.options.get("shift", 0.0))
    fixed = bool(spec.options.get("fixed", False))
    rng = np.random.default_rng(0 if fixed else request.seed)
    mean = torch.tensor(request.mean).view(1, -1, 1, 1)
    std = torch.tensor(request.std).view(1, -1, 1, 1)
    batches = []
    for _ in range(request.num_batches):
        if fixed:
            rng = np.random.default_rng(0)
        items = [
            scene(rng, request.crop_size, shift, block=int(spec.options.get("block", 8)))
            for _ in range(request.batch_size)
        ]
        image = torch.from_numpy(np.stack([i[0] for i in items])).float() / 255
        batch = {"image": (image - mean) / std}
        if "seg" in request.tasks:
            batch["mask"] = torch.from_numpy(np.stack([i[1] for i in items])).long()
        if "height" in request.tasks:
            batch["height"] = torch.from_numpy(np.stack([i[2] for i in items]))
        batches.append(batch)
    return batches


def eval_samples(spec, split):
    shift = float(spec.options.get("shift", 0.0))
    scale = float(spec.options.get("height_scale", 10.0))
    rng = np.random.default_rng(123 + int(shift * 100))
    for i in range(int(spec.options.get("eval_tiles", 2))):
        image, mask, height = scene(rng, 72, shift)
        yield EvalSample(image, mask, height * scale, f"{spec.name}_{split}_{i}")


def single_thread():
    """Generator for a fixture: one torch thread (the CI box is shared; threads thrash)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class ToyDataModule(DataModule):
    """The toy scenes as a datamodule (kind ``toy``)."""

    kinds = (KIND,)

    def describe(self) -> KindInfo:
        return describe(self.spec)

    def train_loader(self, request):
        return train_batches(self.spec, request)

    def eval_samples(self, split):
        return eval_samples(self.spec, split)


def register() -> type[ToyDataModule]:
    return register_datamodule(ToyDataModule, overwrite=True)


def unregister() -> None:
    unregister_kind(KIND)


def toy_config_dict(method: str = "semimtl", mode: str = "m2", **trainer) -> dict:
    """A tiny two-domain config: 'a' has seg labels, 'b' has height labels."""
    return {
        "method": method,
        "mode": mode,
        "seed": 3,
        "model": {"encoder": "resnet18", "encoder_weights": None, "output_stride": 16},
        "data": {
            "datasets": [
                {
                    "name": "a",
                    "kind": KIND,
                    "root": "",
                    "tasks": ["seg"],
                    "options": {"shift": 0.0},
                },
                {
                    "name": "b",
                    "kind": KIND,
                    "root": "",
                    "tasks": ["height"],
                    "options": {"shift": 0.4, "height_scale": 20.0},
                },
            ],
            "crop_size": 32,
            "batch_size": 1,
            "num_workers": 0,
        },
        "trainer": {
            "max_steps": 4,
            "steps_per_epoch": 2,
            "progress_bar": False,
            "preview_every": 0,
            "log_every": 1,
            **trainer,
        },
        "eval": {"patch_size": 32, "overlap": 0.25, "batch_size": 2},
    }
