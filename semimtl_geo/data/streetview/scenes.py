"""The street scene both street-view fixtures draw (Cityscapes label ids, metric depth).

Each frame is a simple street: sky on top, buildings and vegetation at the horizon, a
ground plane of road and sidewalk whose depth follows the camera geometry
(``depth = cam_height * fy / (row - horizon)``), a car and a person standing on it, plus
a few pixels of ids that are not evaluated (ego vehicle, parking) to exercise the 255
mapping. Colours follow the class (Cityscapes palette) plus noise, so a network can
learn them. The writers of the real layouts are :mod:`semimtl_geo.data.cityscapes.fixtures`
and :mod:`semimtl_geo.data.synscapes.fixtures`.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from semimtl_geo.classes import CITYSCAPES_CLASSES
from semimtl_geo.data.cityscapes.facts import LABEL_ID_TO_TRAIN_ID

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


def save_png(array: np.ndarray, path: Path) -> None:
    """Write ``array`` as a PNG at ``path``, creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
