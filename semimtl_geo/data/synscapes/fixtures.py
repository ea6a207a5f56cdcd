"""A tiny synthetic Synscapes tree with the real layout and file formats.

``img/rgb/{i}.png``, ``img/class/{i}.png`` (label ids), ``img/depth/{i}.npy`` (float32
metres), ``meta/{i}.json``; 25 frames by default, so the proportional split is the paper's
20/1/4 ratio (see :mod:`semimtl_geo.data.synscapes.facts`). Frames are
:func:`semimtl_geo.data.streetview.scenes.make_scene` streets from a fixed seed.
"""

import json
from pathlib import Path

import numpy as np

from semimtl_geo.data.streetview.scenes import make_scene, save_png


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
        save_png(scene.image, root / "img" / "rgb" / f"{i}.png")
        save_png(scene.label_ids, root / "img" / "class" / f"{i}.png")
        depth = np.where(np.isfinite(scene.depth), scene.depth, 1000.0).astype(np.float32)
        (root / "img" / "depth").mkdir(parents=True, exist_ok=True)
        np.save(root / "img" / "depth" / f"{i}.npy", depth)
        (root / "meta").mkdir(parents=True, exist_ok=True)
        meta = {"camera": {"intrinsic": {"fx": fx, "fy": fx}}, "scene": {"index": i}}
        (root / "meta" / f"{i}.json").write_text(json.dumps(meta))
    return root
