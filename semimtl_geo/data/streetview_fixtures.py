"""Tiny synthetic Cityscapes and Synscapes datasets with the real layouts and file formats.

Used by the tests and the ``semimtl-geo synthesize-streetview`` command, so the dataset
code is exercised on the same paths, dtypes and encodings as the real archives:

* Cityscapes: ``leftImg8bit/{split}/{city}/{city}_{seq}_{frame}_leftImg8bit.png`` (RGB),
  ``gtFine/.../*_gtFine_labelIds.png`` (8-bit label ids 0..33), ``disparity/.../
  *_disparity.png`` (uint16, ``p = 256 d + 1``, 0 = invalid), ``camera/.../*_camera.json``
  (``extrinsic.baseline`` m, ``intrinsic.fx`` px); ``train_extra`` has no ``gtFine``.
* Synscapes: ``img/rgb/{i}.png``, ``img/class/{i}.png`` (label ids), ``img/depth/{i}.npy``
  (float32 metres), ``meta/{i}.json``; 25 frames by default, so the proportional split
  is the paper's 20/1/4 ratio (see :mod:`semimtl_geo.data.synscapes`).

Each frame is a simple street: sky on top, buildings and vegetation at the horizon, a
ground plane of road and sidewalk whose depth follows the camera geometry
(``depth = cam_height * fy / (row - horizon)``), a car and a person standing on it, plus
a few pixels of ids that are not evaluated (ego vehicle, parking) to exercise the 255
mapping. Colours follow the class (Cityscapes palette) plus noise, so a network can
learn them. Everything derives from a fixed seed.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from semimtl_geo.atomic import atomic_dir
from semimtl_geo.classes import CITYSCAPES_CLASSES
from semimtl_geo.data.streetview_base import LABEL_ID_TO_TRAIN_ID

#: Cities per split in the Cityscapes fixture (real names of each split's cities).
FIXTURE_CITIES: dict[str, tuple[str, ...]] = {
    "train": ("aachen", "bochum"),
    "val": ("frankfurt",),
    "test": ("berlin",),
    "train_extra": ("augsburg", "bad-honnef"),
}
#: Stereo rig of the fixture (Cityscapes' typical values; fx scaled to the fixture width).
BASELINE_M = 0.209313
FX_AT_2048 = 2262.52
CAMERA_HEIGHT_M = 1.22

# Label ids used by the scene generator.
ROAD, SIDEWALK, BUILDING, VEGETATION, SKY, PERSON, CAR = 7, 8, 11, 21, 23, 24, 26
EGO_VEHICLE, PARKING = 1, 9


@dataclass(frozen=True)
class Scene:
    """One synthetic frame at native fixture resolution."""

    image: np.ndarray  # H x W x 3 uint8
    label_ids: np.ndarray  # H x W uint8, Cityscapes label ids
    depth: np.ndarray  # H x W float32 metres, +inf at the sky


def _color(label_id: int) -> tuple[int, int, int]:
    train_id = LABEL_ID_TO_TRAIN_ID.get(label_id)
    return (90, 90, 90) if train_id is None else CITYSCAPES_CLASSES.colors[train_id]


def make_scene(rng: np.random.Generator, size: tuple[int, int], fx: float) -> Scene:
    """Draw one street scene of ``size`` = (rows, cols) with focal length ``fx`` pixels."""
    h, w = size
    ids = np.full((h, w), SKY, dtype=np.uint8)
    depth = np.full((h, w), np.inf, dtype=np.float64)
    horizon = int(h * rng.uniform(0.35, 0.5))
    rows = np.arange(h)[:, None].repeat(w, axis=1)
    ground = rows > horizon
    ground_depth = CAMERA_HEIGHT_M * fx / np.maximum(rows - horizon, 1e-6)
    # Ground plane: road in the middle, sidewalks on both sides, a parking patch.
    ids[ground] = ROAD
    depth[ground] = ground_depth[ground]
    side = max(1, int(w * rng.uniform(0.1, 0.2)))
    ids[ground & (np.arange(w)[None, :] < side)] = SIDEWALK
    ids[ground & (np.arange(w)[None, :] >= w - side)] = SIDEWALK
    pr, pc = horizon + max(1, (h - horizon) // 2), int(rng.integers(side, max(side + 1, w // 4)))
    ids[pr : pr + max(1, h // 16), pc : pc + max(1, w // 16)] = PARKING
    # Facades behind the sidewalks: buildings left, vegetation right, up from the horizon.
    top = max(1, int(horizon * rng.uniform(0.2, 0.5)))
    split = int(w * rng.uniform(0.4, 0.6))
    far = rng.uniform(25.0, 45.0)
    ids[top : horizon + 1, :split] = BUILDING
    ids[top + max(1, h // 16) : horizon + 1, split:] = VEGETATION
    facade = (rows >= top) & (rows <= horizon) & (ids != SKY)
    depth[facade] = far
    # A car and a person standing on the ground at the depth of their base row.
    for label_id, ph, pw in ((CAR, h // 6, w // 5), (PERSON, h // 5, max(2, w // 24))):
        base = int(rng.integers(horizon + max(2, (h - horizon) // 4), h))
        ph, pw = max(2, ph), max(2, pw)
        left = int(rng.integers(side, max(side + 1, w - side - pw)))
        ids[max(0, base - ph) : base, left : left + pw] = label_id
        depth[max(0, base - ph) : base, left : left + pw] = ground_depth[base - 1, 0]
    # Bottom rows: the ego vehicle's bonnet (not evaluated).
    ids[h - max(1, h // 16) :, :] = EGO_VEHICLE
    palette = np.array([_color(i) for i in range(256)], dtype=np.float64)
    image = palette[ids] + rng.normal(0.0, 12.0, (h, w, 3))
    return Scene(np.clip(image, 0, 255).astype(np.uint8), ids, depth.astype(np.float32))


def depth_to_disparity_png(depth: np.ndarray, baseline: float, fx: float) -> np.ndarray:
    """Encode metric depth as Cityscapes uint16 disparity (``p = 256 d + 1``, 0 = invalid)."""
    with np.errstate(divide="ignore"):
        d = np.where(np.isfinite(depth) & (depth > 0), baseline * fx / depth, 0.0)
    p = np.where(d > 0, np.round(d * 256.0 + 1.0), 0.0)
    return np.clip(p, 0, 65535).astype(np.uint16)


def _save_png(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


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
                _save_png(scene.image, image_path)
                disparity = depth_to_disparity_png(scene.depth, baseline, fx)
                holes = rng.random(size) < invalid_fraction
                disparity[holes] = 0
                _save_png(disparity, root / "disparity" / split / city / f"{stem}_disparity.png")
                camera = {
                    "extrinsic": {"baseline": baseline, "pitch": 0.038, "roll": 0.0,
                                  "x": 1.7, "y": 0.1, "yaw": -0.02, "z": CAMERA_HEIGHT_M},
                    "intrinsic": {"fx": fx, "fy": fx, "u0": size[1] / 2, "v0": size[0] / 2},
                }
                cam_path = root / "camera" / split / city / f"{stem}_camera.json"
                cam_path.parent.mkdir(parents=True, exist_ok=True)
                cam_path.write_text(json.dumps(camera, indent=2))
                if split != "train_extra":
                    _save_png(scene.label_ids,
                              root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png")
    return root


def write_synscapes_fixture(
    root: str | Path, size: tuple[int, int] = (64, 128), frames: int = 25, seed: int = 1
) -> Path:
    """Write a tiny Synscapes tree (``img/rgb``, ``img/class``, ``img/depth``, ``meta``).

    Sky pixels get a depth of 1000 m in the ``.npy`` (the loader relies on the class map,
    not on the sky's stored value, to find the sky).

    Args:
        root: dataset root to create.
        size: (rows, cols) of every frame (the real ones are 720x1440).
        frames: number of frames, ids ``1..frames``.
        seed: random seed.

    Returns:
        ``root``.

    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    fx = 1590.83 * size[1] / 1440
    for i in range(1, frames + 1):
        scene = make_scene(rng, size, fx)
        _save_png(scene.image, root / "img" / "rgb" / f"{i}.png")
        _save_png(scene.label_ids, root / "img" / "class" / f"{i}.png")
        depth = np.where(np.isfinite(scene.depth), scene.depth, 1000.0).astype(np.float32)
        (root / "img" / "depth").mkdir(parents=True, exist_ok=True)
        np.save(root / "img" / "depth" / f"{i}.npy", depth)
        (root / "meta").mkdir(parents=True, exist_ok=True)
        meta = {"camera": {"intrinsic": {"fx": fx, "fy": fx}}, "scene": {"index": i}}
        (root / "meta" / f"{i}.json").write_text(json.dumps(meta))
    return root


def write_streetview_fixtures(
    out_dir: str | Path,
    size: tuple[int, int] = (64, 128),
    frames_per_city: int = 2,
    synscapes_frames: int = 25,
    seed: int = 0,
    overwrite: bool = False,
) -> dict[str, Path]:
    """Write ``out_dir/cityscapes`` and ``out_dir/synscapes``, each complete or not at all.

    Each tree is written in a temporary folder beside its final place and renamed into
    it, so an interrupted run leaves no half-written dataset.

    Returns:
        ``{"cityscapes": path, "synscapes": path}``.

    """
    from semimtl_geo.errors import UserError
    from semimtl_geo.outputs import check_output_dir

    out_dir = check_output_dir(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    targets = {"cityscapes": out_dir / "cityscapes", "synscapes": out_dir / "synscapes"}
    existing = [str(p) for p in targets.values() if p.exists()]
    if existing and not overwrite:
        raise UserError(
            f"{', '.join(existing)} already exist; pass --overwrite or pick another -o."
        )
    for name, final in targets.items():
        with atomic_dir(final) as tmp:
            if name == "cityscapes":
                write_cityscapes_fixture(tmp, size, frames_per_city, seed)
            else:
                write_synscapes_fixture(tmp, size, synscapes_frames, seed + 1)
    return targets
