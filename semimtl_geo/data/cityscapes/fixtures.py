"""A tiny synthetic Cityscapes tree with the real layout and file formats.

Used by the tests and ``semimtl-geo synthesize-streetview``, so the dataset code reads the
same paths, dtypes and encodings as the real archives:
``leftImg8bit/{split}/{city}/{city}_{seq}_{frame}_leftImg8bit.png`` (RGB),
``gtFine/.../*_gtFine_labelIds.png`` (8-bit label ids 0..33), ``disparity/.../
*_disparity.png`` (uint16, ``p = 256 d + 1``, 0 = invalid), ``camera/.../*_camera.json``
(``extrinsic.baseline`` m, ``intrinsic.fx`` px); ``train_extra`` has no ``gtFine``.
Frames are :func:`semimtl_geo.data.streetview.scenes.make_scene` streets from a fixed seed.
"""

import json
from pathlib import Path

import numpy as np

from semimtl_geo.data.streetview.scenes import (
    BASELINE_M,
    CAMERA_HEIGHT_M,
    FX_AT_2048,
    depth_to_disparity_png,
    make_scene,
    save_png,
)

#: Cities per split in the Cityscapes fixture (real names of each split's cities).
FIXTURE_CITIES: dict[str, tuple[str, ...]] = {
    "train": ("aachen", "bochum"),
    "val": ("frankfurt",),
    "test": ("berlin",),
    "train_extra": ("augsburg", "bad-honnef"),
}

def write_cityscapes_fixture(
    root: str | Path,
    size: tuple[int, int] = (64, 128),
    frames_per_city: int = 2,
    seed: int = 0,
    invalid_fraction: float = 0.05,
) -> Path:
    """Write a tiny Cityscapes tree (train, val, test, train_extra) under ``root``.

    Args:
        root: dataset root to create (``leftImg8bit/``, ``gtFine/``, ``disparity/``,
            ``camera/`` are written inside).
        size: native (rows, cols) of every frame (the real ones are 1024x2048).
        frames_per_city: frames in each city folder.
        seed: random seed.
        invalid_fraction: share of ground pixels set to the invalid disparity 0.

    Returns:
        ``root``.

    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    fx = FX_AT_2048 * size[1] / 2048
    for split, cities in FIXTURE_CITIES.items():
        for c, city in enumerate(cities):
            for f in range(frames_per_city):
                stem = f"{city}_{c:06d}_{19 + f * 30:06d}"
                scene = make_scene(rng, size, fx)
                baseline = BASELINE_M * rng.uniform(0.98, 1.02)
                image_path = root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png"
                save_png(scene.image, image_path)
                disparity = depth_to_disparity_png(scene.depth, baseline, fx)
                holes = rng.random(size) < invalid_fraction
                disparity[holes] = 0
                save_png(disparity, root / "disparity" / split / city / f"{stem}_disparity.png")
                camera = {
                    "extrinsic": {"baseline": baseline, "pitch": 0.038, "roll": 0.0,
                                  "x": 1.7, "y": 0.1, "yaw": -0.02, "z": CAMERA_HEIGHT_M},
                    "intrinsic": {"fx": fx, "fy": fx, "u0": size[1] / 2, "v0": size[0] / 2},
                }
                cam_path = root / "camera" / split / city / f"{stem}_camera.json"
                cam_path.parent.mkdir(parents=True, exist_ok=True)
                cam_path.write_text(json.dumps(camera, indent=2))
                if split != "train_extra":
                    save_png(scene.label_ids,
                              root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png")
    return root
