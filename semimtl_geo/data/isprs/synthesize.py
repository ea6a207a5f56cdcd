"""Synthetic Potsdam- and Vaihingen-style archives with the real names, formats and grids.

The archives mimic the ISPRS downloads described in :mod:`semimtl_geo.data.isprs` file for
file (names, nesting, band order, data types, georeferencing, the alpha-flagged band 4 of
the RGBIR orthos, the one-row-short nDSM of Potsdam tile 03_13, Vaihingen tops without
georeferencing), but hold procedurally generated urban scenes, so that tests, the demo
and the benchmarks can run the whole pipeline without the real (licensed) data.

Scenes are generated in metres and rasterised at each dataset's GSD (5 cm / 9 cm). Height
and class agree: buildings are tall (4-25 m, flat or pitched roofs), trees mid (3-15 m,
domed crowns), cars low (~1.5 m), clutter low and varied, ground and low vegetation near
0 m. The task is not trivially separable: grey roofs look like roads, trees and low
vegetation share colours and differ mostly in texture and height, shadows darken
everything they fall on, sensor noise and illumination vary per tile. Potsdam and
Vaihingen differ in the way the real ones do: Potsdam has R, G, B and IR at 5 cm with
many grey/dark flat roofs; Vaihingen is IR-R-G only at 9 cm, with red tiled roofs,
warmer and more saturated false colours, softer texture and stronger haze.

Everything is deterministic for a given seed.
"""

from __future__ import annotations

import io
import shutil
import tempfile
import warnings
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from affine import Affine
from PIL import Image
from rasterio.errors import NotGeoreferencedWarning
from rasterio.io import MemoryFile
from rasterio.transform import from_origin
from tqdm.auto import tqdm

from semimtl_geo.atomic import atomic_output, atomic_outputs
from semimtl_geo.data import isprs

Layout = Literal["zips", "outer-zip", "extracted"]
Nesting = Literal["real", "flat", "nested"]

#: Fixed zip timestamp so archives are byte-identical for the same seed.
_ZIP_DATE = (2021, 11, 16, 2, 32, 0)

#: Potsdam origin of tile (r=2, c=7) in EPSG:32633; tiles are laid edge to edge from it.
_POTSDAM_ORIGIN = (366_676.5, 5_811_262.6)


# --------------------------------------------------------------------------------------
# tile selection
# --------------------------------------------------------------------------------------


def default_tiles(dataset: str, count: int) -> list[str]:
    """Real tile ids to synthesize: alternating train and test so both splits exist.

    Potsdam's test list starts with ``3_13`` (the tile whose nDSM is one row short).
    """
    if dataset == "potsdam":
        train = list(isprs.POTSDAM_TRAIN)
        test = ["3_13"] + [t for t in isprs.POTSDAM_TEST if t != "3_13"]
    else:
        train = list(isprs.VAIHINGEN_TRAIN)
        test = list(isprs.VAIHINGEN_TEST)
    order: list[str] = []
    for a, b in zip(train, test + [None] * (len(train) - len(test))):
        order.append(a)
        if b is not None:
            order.append(b)
    order += [t for t in test if t not in order]
    if not 1 <= count <= len(order):
        raise ValueError(f"{dataset} has {len(order)} tiles; asked for {count}.")
    return order[:count]


# --------------------------------------------------------------------------------------
# scene generation (metres -> pixels)
# --------------------------------------------------------------------------------------

#: Class ids of the ISPRS table (:data:`semimtl_geo.data.isprs.CLASSES`, label order).
IMPERVIOUS, BUILDING, LOW_VEGETATION, TREE, CAR, CLUTTER = (
    isprs.CLASSES.names.index(name)
    for name in ("impervious_surfaces", "building", "low_vegetation", "tree", "car", "clutter")
)


@dataclass(frozen=True)
class SceneStyle:
    """How a dataset's urban blocks look, in metres (ranges are drawn uniformly).

    Attributes:
        road_spacing_m: mean distance between roads of the grid.
        buildings_per_block: ``[low, high)`` buildings tried per block.
        footprint_m: ``(width range, depth range)`` of a building footprint.
        roof_top_m: height range of a roof (the ridge of a pitched one).
        pitched_share: probability that a roof is pitched (else flat).
        m2_per_tree: ground area per tree.
        clutter_per_block: ``[low, high)`` clutter objects tried per block.
        clutter_m: ``(width range, depth range)`` of a clutter object (containers,
            construction material, sheds, bins: the real Potsdam labels a few per cent of
            its pixels clutter, often as patches of several metres; Vaihingen far fewer).

    """

    road_spacing_m: float
    buildings_per_block: tuple[int, int]
    footprint_m: tuple[tuple[float, float], tuple[float, float]]
    roof_top_m: tuple[float, float]
    pitched_share: float
    m2_per_tree: float
    clutter_per_block: tuple[int, int]
    clutter_m: tuple[tuple[float, float], tuple[float, float]]


#: Potsdam: larger, mostly flat-roofed blocks; Vaihingen: small detached houses with
#: pitched roofs and more trees.
STYLES: dict[str, SceneStyle] = {
    "potsdam": SceneStyle(45.0, (1, 4), ((10, 35), (10, 30)), (6.0, 25.0), 0.25, 220.0,
                          (1, 6), ((2.0, 10.0), (2.0, 8.0))),
    "vaihingen": SceneStyle(38.0, (2, 6), ((8, 18), (8, 16)), (4.0, 12.0), 0.75, 140.0,
                            (0, 3), ((1.5, 7.0), (1.5, 5.0))),
}


@dataclass
class Scene:
    """A rasterised synthetic scene: class ids (0-5), nDSM in metres, shadow mask."""

    classes: np.ndarray  # uint8 HxW
    height: np.ndarray  # float32 HxW, metres above ground
    shadow: np.ndarray  # float32 HxW in [0, 1], 1 = full shadow
    instance: np.ndarray  # int32 HxW, object id (for per-object colours), 0 = none


class _Canvas:
    """The class, height and instance maps a scene is drawn on, plus the next object id."""

    def __init__(self, height: int, width: int, gsd: float) -> None:
        self.h, self.w = height, width
        self.m = 1.0 / gsd  # pixels per metre
        self.cls = np.full((height, width), LOW_VEGETATION, np.uint8)  # background
        self.hgt = np.zeros((height, width), np.float32)
        self.inst = np.zeros((height, width), np.int32)
        self.next_id = 1

    def box(self, x0: float, y0: float, x1: float, y1: float) -> tuple[slice, slice]:
        """Return the pixel slices of the box ``[x0, x1) x [y0, y1)`` clipped to the canvas."""
        return _box(self.h, self.w, x0, y0, x1, y1)

    def new_id(self) -> int:
        """Return a fresh object id."""
        self.next_id += 1
        return self.next_id - 1


def smooth_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Zero-mean unit-ish noise varying over ``cell`` pixels (bilinear-upsampled lattice)."""
    gh = max(2, int(h / max(cell, 1.0)) + 2)
    gw = max(2, int(w / max(cell, 1.0)) + 2)
    lattice = rng.standard_normal((gh, gw)).astype(np.float32)
    img = Image.fromarray(lattice, mode="F").resize((w, h), Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.float32)


def _box(h: int, w: int, x0: float, y0: float, x1: float, y1: float) -> tuple[slice, slice]:
    c0, c1 = max(0, int(round(x0))), min(w, int(round(x1)))
    r0, r1 = max(0, int(round(y0))), min(h, int(round(y1)))
    return slice(r0, max(r0, r1)), slice(c0, max(c0, c1))


Road = tuple[float, float]  # (start, end) pixel offsets across the road


def _lay_roads(rng: np.random.Generator, c: _Canvas,
               style: SceneStyle) -> tuple[list[Road], list[Road]]:
    """Lay a road grid with jittered spacing, 6-12 m wide: (horizontal, vertical) roads."""
    spacing = style.road_spacing_m * c.m
    roads_h: list[Road] = []
    roads_v: list[Road] = []
    for axis, store in ((0, roads_h), (1, roads_v)):
        size = c.h if axis == 0 else c.w
        pos = rng.uniform(0.2, 0.8) * spacing
        while pos < size:
            rw = rng.uniform(6.0, 12.0) * c.m
            store.append((pos, pos + rw))
            if axis == 0:
                c.cls[c.box(0, pos, c.w, pos + rw)] = IMPERVIOUS
            else:
                c.cls[c.box(pos, 0, pos + rw, c.h)] = IMPERVIOUS
            pos += rw + spacing * rng.uniform(0.7, 1.3)
    return roads_h, roads_v


def _gaps(roads: list[Road], size: int, min_px: float) -> list[tuple[float, float]]:
    """Return the stretches between roads (and the canvas edges) longer than ``min_px``."""
    edges = [(-1e9, 0.0)] + sorted(roads) + [(size, 1e9)]
    return [(a[1], b[0]) for a, b in zip(edges[:-1], edges[1:]) if b[0] - a[1] > min_px]


def _shape_roof(rng: np.random.Generator, c: _Canvas, sl: tuple[slice, slice], top: float,
                style: SceneStyle) -> None:
    """Shape a pitched (ridge along the long axis) or flat roof at ``top`` m, add furniture."""
    pitched = rng.random() < style.pitched_share
    rows = sl[0].stop - sl[0].start
    cols = sl[1].stop - sl[1].start
    if pitched:
        # Ridge along the long axis: height falls linearly to the eaves.
        along_rows = cols > rows
        n = rows if along_rows else cols
        prof = 1.0 - np.abs(np.linspace(-1, 1, n, dtype=np.float32))
        ridge = rng.uniform(2.0, 5.0)
        prof = top - ridge + ridge * prof
        c.hgt[sl] = prof[:, None] if along_rows else prof[None, :]
    else:
        c.hgt[sl] = top + 0.3 * rng.standard_normal()
    # Roof furniture (clutter on roofs is labelled building in ISPRS).
    for _ in range(rng.integers(0, 4)):
        fw = rng.uniform(0.8, 3.0) * c.m
        fx = rng.uniform(sl[1].start, max(sl[1].start + 1, sl[1].stop - fw))
        fy = rng.uniform(sl[0].start, max(sl[0].start + 1, sl[0].stop - fw))
        c.hgt[c.box(fx, fy, fx + fw, fy + fw)] += rng.uniform(0.5, 2.0)


def _place_building(rng: np.random.Generator, c: _Canvas, block: tuple[float, ...],
                    pad: float, style: SceneStyle) -> None:
    """Try one building inside ``block`` = (x0, y0, x1, y1), ``pad`` px from its edges."""
    x0, y0, x1, y1 = block
    (wlo, whi), (hlo, hhi) = style.footprint_m
    bw, bh = rng.uniform(wlo, whi) * c.m, rng.uniform(hlo, hhi) * c.m
    top = rng.uniform(*style.roof_top_m)
    bx = rng.uniform(x0 + pad, max(x0 + pad, x1 - pad - bw))
    by = rng.uniform(y0 + pad, max(y0 + pad, y1 - pad - bh))
    sl = c.box(bx, by, min(bx + bw, x1 - pad), min(by + bh, y1 - pad))
    if min(sl[0].stop - sl[0].start, sl[1].stop - sl[1].start) < 4 * c.m:
        return  # no sliver buildings where a block is too small
    c.cls[sl] = BUILDING
    c.inst[sl] = c.new_id()
    _shape_roof(rng, c, sl, top, style)


def _scatter_clutter(rng: np.random.Generator, c: _Canvas, block: tuple[float, ...],
                     style: SceneStyle) -> None:
    """Scatter low clutter on the block's ground (containers, construction material, bins)."""
    x0, y0, x1, y1 = block
    (wlo, whi), (hlo, hhi) = style.clutter_m
    for _ in range(rng.integers(*style.clutter_per_block)):
        cw, ch = rng.uniform(wlo, whi) * c.m, rng.uniform(hlo, hhi) * c.m
        cx = rng.uniform(x0, max(x0 + 1, x1 - cw))
        cy = rng.uniform(y0, max(y0 + 1, y1 - ch))
        cs = c.box(cx, cy, cx + cw, cy + ch)
        free = c.cls[cs] != BUILDING
        c.cls[cs] = np.where(free, CLUTTER, c.cls[cs])
        c.hgt[cs] = np.where(free, rng.uniform(0.2, 2.5), c.hgt[cs])
        c.inst[cs] = np.where(free, c.new_id(), c.inst[cs])


def _fill_block(rng: np.random.Generator, c: _Canvas, block: tuple[float, ...],
                style: SceneStyle) -> None:
    """Fill a block between roads: a pavement strip, buildings, ground clutter."""
    x0, y0, x1, _ = block
    pad = rng.uniform(1.5, 4.0) * c.m
    if rng.random() < 0.5:
        c.cls[c.box(x0, y0, x1, y0 + pad)] = IMPERVIOUS
    for _ in range(rng.integers(*style.buildings_per_block)):
        _place_building(rng, c, block, pad, style)
    _scatter_clutter(rng, c, block, style)


def _park_cars(rng: np.random.Generator, c: _Canvas, roads_h: list[Road],
               roads_v: list[Road]) -> None:
    """Park cars along the roads (low, near the road edges)."""
    m = c.m
    for store, horizontal in ((roads_h, True), (roads_v, False)):
        for a, b in store:
            length = c.w if horizontal else c.h
            pos = rng.uniform(0, 10) * m
            while pos < length:
                carl, carw = rng.uniform(3.8, 5.0) * m, rng.uniform(1.6, 2.0) * m
                lane = a + rng.uniform(0.3, 1.2) * m if rng.random() < 0.5 else b - carw - 0.5 * m
                if horizontal:
                    sl = c.box(pos, lane, pos + carl, lane + carw)
                else:
                    sl = c.box(lane, pos, lane + carw, pos + carl)
                c.cls[sl] = CAR
                c.hgt[sl] = rng.uniform(1.3, 1.7)
                c.inst[sl] = c.new_id()
                pos += carl + rng.exponential(12.0) * m + 0.5 * m


def _plant_trees(rng: np.random.Generator, c: _Canvas, gsd: float, style: SceneStyle) -> None:
    """Plant domed crowns over vegetation, sometimes over roads and cars, never roofs."""
    n_trees = int(c.h * c.w * gsd * gsd / style.m2_per_tree)
    for _ in range(n_trees):
        r = rng.uniform(1.5, 5.0) * c.m
        cx, cy = rng.uniform(0, c.w), rng.uniform(0, c.h)
        sl = c.box(cx - r, cy - r, cx + r, cy + r)
        if sl[0].stop <= sl[0].start or sl[1].stop <= sl[1].start:
            continue
        if (c.cls[sl] == BUILDING).mean() > 0.05:
            continue
        ys = np.arange(sl[0].start, sl[0].stop, dtype=np.float32)[:, None] - cy
        xs = np.arange(sl[1].start, sl[1].stop, dtype=np.float32)[None, :] - cx
        d = np.sqrt(xs * xs + ys * ys) / r
        crown = d < 1.0
        top = rng.uniform(3.0, 15.0)
        th = top * np.sqrt(np.clip(1.0 - d * d, 0.0, 1.0)) * rng.uniform(0.75, 1.0)
        th = np.maximum(th, 0.4 * top)
        take = crown & (th > c.hgt[sl]) & (c.cls[sl] != BUILDING)
        c.cls[sl] = np.where(take, TREE, c.cls[sl])
        c.hgt[sl] = np.where(take, th, c.hgt[sl])
        c.inst[sl] = np.where(take, c.new_id(), c.inst[sl])


def _roughen(rng: np.random.Generator, c: _Canvas) -> np.ndarray:
    """Add canopy roughness and low-vegetation stubble; return the float32 nDSM (>= 0 m)."""
    rough = smooth_noise(rng, c.h, c.w, 0.6 * c.m)
    hgt = np.where(c.cls == TREE, c.hgt + 0.6 * rough, c.hgt)
    hgt = np.where(c.cls == LOW_VEGETATION, hgt + 0.12 * np.abs(rough), hgt)
    return np.maximum(hgt, 0.0).astype(np.float32)


def generate_scene(rng: np.random.Generator, height: int, width: int, gsd: float,
                   style: str) -> Scene:
    """Rasterise a random urban block pattern at ``gsd`` metres per pixel.

    Ground relief, a road grid, blocks of buildings and clutter between the roads, cars
    along them, trees, then texture and the sun's shadows, in that order (the draws from
    ``rng`` follow it, so a seed always gives the same scene).

    Args:
        rng: random generator (the only source of randomness).
        height: rows.
        width: columns.
        gsd: metres per pixel.
        style: ``"potsdam"`` (larger flat-roofed blocks) or ``"vaihingen"`` (small
            detached houses with pitched roofs, more trees); see :data:`STYLES`.

    Returns:
        The scene's class map, nDSM (metres), shadow and instance maps.

    """
    look = STYLES[style]
    c = _Canvas(height, width, gsd)
    # Ground relief: a few decimetres of smooth variation (nDSM ground is near 0).
    c.hgt += 0.15 * np.abs(smooth_noise(rng, height, width, 20 * c.m))
    roads_h, roads_v = _lay_roads(rng, c, look)
    for y0, y1 in _gaps(roads_h, height, 4 * c.m):
        for x0, x1 in _gaps(roads_v, width, 4 * c.m):
            _fill_block(rng, c, (x0, y0, x1, y1), look)
    _park_cars(rng, c, roads_h, roads_v)
    _plant_trees(rng, c, gsd, look)
    hgt = _roughen(rng, c)
    shadow = cast_shadow(hgt, gsd, azimuth_deg=rng.uniform(120, 240),
                         elevation_deg=rng.uniform(35, 55))
    return Scene(c.cls, hgt, shadow, c.inst)


def cast_shadow(height_m: np.ndarray, gsd: float, azimuth_deg: float,
                elevation_deg: float, step_m: float = 1.0, max_m: float = 30.0) -> np.ndarray:
    """Soft shadow mask: a pixel is shaded when something toward the sun rises above its ray.

    Marches ``max_m / step_m`` steps toward the sun (azimuth clockwise from north) on
    shifted copies of the height map, so the cost is a few passes over the array.
    """
    h, w = height_m.shape
    az = np.deg2rad(azimuth_deg)
    dx, dy = np.sin(az), -np.cos(az)  # toward the sun, image rows grow southward
    tan_e = np.tan(np.deg2rad(elevation_deg))
    block = np.zeros_like(height_m)
    n_steps = int(max_m / step_m)
    for k in range(1, n_steps + 1):
        ox = int(round(k * step_m / gsd * dx))
        oy = int(round(k * step_m / gsd * dy))
        if abs(ox) >= w or abs(oy) >= h:
            break
        src = height_m[max(0, oy):h + min(0, oy), max(0, ox):w + min(0, ox)]
        dst = block[max(0, -oy):h + min(0, -oy), max(0, -ox):w + min(0, -ox)]
        np.maximum(dst, src - k * step_m * tan_e, out=dst)
    # A metre of tolerance keeps domed crowns and pitched roofs from shading themselves.
    return np.clip((block - height_m - 1.0) / 0.8, 0.0, 1.0).astype(np.float32)


# --------------------------------------------------------------------------------------
# appearance
# --------------------------------------------------------------------------------------

# Mean reflectance per class in (R, G, B, IR); per-object variation is added on top.
_BASE = {
    "potsdam": np.array([
        [0.47, 0.46, 0.44, 0.40],  # impervious: grey asphalt/pavement
        [0.45, 0.43, 0.42, 0.40],  # building: grey flat roofs (look like roads)
        [0.30, 0.42, 0.22, 0.66],  # low vegetation
        [0.20, 0.33, 0.17, 0.60],  # tree (same hue as low veg, darker)
        [0.50, 0.50, 0.50, 0.45],  # car (recoloured per car)
        [0.55, 0.35, 0.30, 0.45],  # clutter (recoloured per object)
    ], np.float32),
    "vaihingen": np.array([
        [0.50, 0.48, 0.47, 0.42],
        [0.56, 0.33, 0.28, 0.56],  # red tiled roofs dominate (tan in IRRG)
        [0.32, 0.45, 0.24, 0.74],
        [0.22, 0.35, 0.18, 0.68],
        [0.50, 0.50, 0.50, 0.45],
        [0.58, 0.40, 0.32, 0.48],
    ], np.float32),
}


def render_bands(rng: np.random.Generator, scene: Scene, gsd: float, style: str,
                 bands: Iterable[str]) -> dict[str, np.ndarray]:
    """Render uint8 bands (any of ``R``, ``G``, ``B``, ``IR``) of a scene.

    Args:
        rng: random generator.
        scene: the scene to colour.
        gsd: metres per pixel (texture scales are metric).
        style: ``"potsdam"`` or ``"vaihingen"`` (palette, illumination, haze, noise).
        bands: which bands to return.

    Returns:
        band name -> uint8 HxW array.

    """
    h, w = scene.classes.shape
    m = 1.0 / gsd
    base = _BASE[style]
    n_obj = int(scene.instance.max()) + 1
    # Per-object colour offsets; cars and clutter get arbitrary colours.
    obj_rgbir = rng.normal(0.0, 0.06, (n_obj, 4)).astype(np.float32)
    obj_rgbir[0] = 0.0
    vivid = rng.uniform(0.05, 0.9, (n_obj, 4)).astype(np.float32)
    roof_kind = rng.random(n_obj)
    tile_gain = rng.uniform(0.9, 1.1)
    fine = smooth_noise(rng, h, w, 0.25 * m)
    coarse = smooth_noise(rng, h, w, 3.0 * m)
    if style == "potsdam":
        illum, haze, noise_sd, sat = 1.0 * tile_gain, 0.02, 0.025, 1.0
    else:
        illum, haze, noise_sd, sat = 1.08 * tile_gain, 0.07, 0.035, 1.25
    cls = scene.classes
    inst = scene.instance
    # Band-independent layers, computed once.
    sel = (cls == CAR) | (cls == CLUTTER)  # per-object arbitrary colour
    roofs = cls == BUILDING
    if style == "potsdam":  # roofs: grey, dark and red-brown mix
        dark = roofs & (roof_kind[inst] < 0.3)
        red = roofs & (roof_kind[inst] > 0.75)
    else:  # mostly red tiles, some grey
        grey = roofs & (roof_kind[inst] < 0.25)
    # Texture: trees are coarse and clumpy, low vegetation fine, roofs smooth.
    tex = np.where(cls == TREE, 0.09 * coarse + 0.05 * fine,
                   np.where(cls == LOW_VEGETATION, 0.04 * coarse + 0.05 * fine, 0.03 * fine))
    del fine, coarse
    # Slopes of pitched roofs: sunlit vs shaded side from the height gradient.
    gy = np.zeros_like(scene.height)
    gy[1:-1] = scene.height[2:] - scene.height[:-2]
    slope = 1.0 + np.clip(gy * m * 0.05, -0.25, 0.25) * roofs
    del gy
    out: dict[str, np.ndarray] = {}
    for name in bands:
        b = ("R", "G", "B", "IR").index(name)
        v = base[cls, b].copy()
        v += obj_rgbir[inst, b]
        v[sel] = 0.5 * v[sel] + 0.5 * vivid[inst[sel], b]
        if style == "potsdam":
            v[dark] *= 0.55
            v[red] = v[red] * 0.5 + 0.5 * _BASE["vaihingen"][BUILDING, b]
        else:
            v[grey] = v[grey] * 0.4 + 0.6 * _BASE["potsdam"][BUILDING, b]
        v = v + tex * (1.3 if name == "IR" else 1.0)
        v = v * slope
        # Shadows: darker, bluish; IR drops the most over vegetation.
        shade = 1.0 - scene.shadow * (0.6 if name == "IR" else 0.5 if name != "B" else 0.4)
        v = v * shade * illum
        if sat != 1.0:
            v = 0.5 + (v - 0.5) * sat
        v = v * (1 - haze) + haze * 0.8
        v += rng.normal(0.0, noise_sd, (h, w)).astype(np.float32)
        out[name] = np.clip(v * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return out


def color_labels(classes: np.ndarray, boundary_px: int = 0) -> np.ndarray:
    """RGB color label image (HxWx3 uint8); ``boundary_px > 0`` blacks out class edges."""
    rgb = isprs.CLASSES.colorize(classes)
    if boundary_px > 0:
        edge = np.zeros(classes.shape, bool)
        for k in range(1, boundary_px + 1):
            edge[k:] |= classes[k:] != classes[:-k]
            edge[:-k] |= classes[k:] != classes[:-k]
            edge[:, k:] |= classes[:, k:] != classes[:, :-k]
            edge[:, :-k] |= classes[:, k:] != classes[:, :-k]
        rgb[edge] = isprs.BOUNDARY_COLOR
    return rgb


def encode_ndsm(height_m: np.ndarray, scale: float) -> np.ndarray:
    """8-bit nDSM grey levels: ``round(h / scale * 255)`` clipped to 0-255."""
    return np.clip(np.round(height_m / scale * 255.0), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------
# encoders (bytes of each file format)
# --------------------------------------------------------------------------------------


def geotiff_bytes(bands: list[np.ndarray], transform: Affine | None, crs: str | None, *,
                  alpha_last: bool = False, dtype: str = "uint8",
                  photometric: str | None = None) -> bytes:
    """Encode a (Geo)TIFF in memory; ``crs=None`` writes no georeferencing at all."""
    h, w = bands[0].shape
    profile = {"driver": "GTiff", "width": w, "height": h, "count": len(bands), "dtype": dtype}
    if crs is not None:
        profile.update(crs=crs, transform=transform)
    if alpha_last:
        profile.update(photometric="RGB", alpha="YES")
    elif photometric:
        profile["photometric"] = photometric
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with MemoryFile() as mem:
            with mem.open(**profile) as dst:
                for i, band in enumerate(bands, start=1):
                    dst.write(band, i)
            return mem.read()


def pil_bytes(array: np.ndarray, fmt: str, **kwargs) -> bytes:
    """Encode an array with Pillow (TIFF without georeferencing, JPEG, BMP)."""
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt, **kwargs)
    return buf.getvalue()


# --------------------------------------------------------------------------------------
# archive writers
# --------------------------------------------------------------------------------------


class _Archive:
    """One downloadable archive: its zip name and the folder its members nest in."""

    def __init__(self, zip_name: str, inner_dir: str | None):
        self.zip_name = zip_name
        self.inner_dir = inner_dir
        self.dirs: set[str] = set()

    def member_path(self, relpath: str) -> str:
        return f"{self.inner_dir}/{relpath}" if self.inner_dir else relpath


def _zipinfo(name: str, compress: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
    info.compress_type = compress
    info.external_attr = 0o644 << 16
    return info


#: A stream of archive members in tile-major order: (archive, path inside it, bytes).
Members = Iterable[tuple[_Archive, str, bytes]]


def _fill_zips(zips: dict[str, Path], archives: list[_Archive], members: Members) -> None:
    """Write a tile-major member stream into the zip files ``zips`` (zip name -> path)."""
    handles = {id(a): zipfile.ZipFile(zips[a.zip_name], "w") for a in archives}
    try:
        for arc, rel, data in members:
            zf = handles[id(arc)]
            name = arc.member_path(rel)
            parts = name.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                d = "/".join(parts[:i]) + "/"
                if d not in arc.dirs:
                    arc.dirs.add(d)
                    zf.writestr(_zipinfo(d, zipfile.ZIP_STORED), b"")
            zf.writestr(_zipinfo(name, zipfile.ZIP_DEFLATED), data, compresslevel=1)
    finally:
        for zf in handles.values():
            zf.close()


def _write_archives(folder: Path, archives: list[_Archive], members: Members,
                    layout: Layout, outer_name: str) -> None:
    """Write a tile-major member stream into all archives at once (each tile renders once).

    Every file is written under a temporary name and renamed into place when complete
    (:mod:`semimtl_geo.atomic`): the archives of ``zips`` together, the outer zip of
    ``outer-zip`` once its inner zips are in it, each file of ``extracted`` on its own.
    """
    folder.mkdir(parents=True, exist_ok=True)
    if layout not in ("zips", "outer-zip", "extracted"):
        raise ValueError(f"unknown layout {layout!r}; use zips, outer-zip or extracted")
    if layout == "extracted":
        for arc, rel, data in members:
            # A flat zip is extracted into a folder named after it (what unzip tools do);
            # ``top/...`` style members keep their own folders.
            base = folder if (arc.inner_dir or "/" in rel) else folder / Path(arc.zip_name).stem
            with atomic_output(base / arc.member_path(rel)) as tmp:
                tmp.write_bytes(data)
        return
    if layout == "zips":
        finals = {a.zip_name: folder / a.zip_name for a in archives}
        with atomic_outputs(finals, suffix=".partial") as zips:
            _fill_zips(zips, archives, members)
        return
    outer_dir = Path(outer_name).stem
    with tempfile.TemporaryDirectory(dir=folder, prefix=".synth-") as scratch, \
            atomic_output(folder / outer_name, suffix=".partial") as outer:
        zips = {a.zip_name: Path(scratch) / a.zip_name for a in archives}
        _fill_zips(zips, archives, members)
        with zipfile.ZipFile(outer, "w") as zf:
            zf.writestr(_zipinfo(f"{outer_dir}/", zipfile.ZIP_STORED), b"")
            for a in archives:
                # Inner zips are stored, not deflated again (as in the real download).
                info = _zipinfo(f"{outer_dir}/{a.zip_name}", zipfile.ZIP_STORED)
                with open(zips[a.zip_name], "rb") as src, zf.open(info, "w") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)


# --------------------------------------------------------------------------------------
# datasets
# --------------------------------------------------------------------------------------


def _tile_rng(seed: int, dataset: str, tile: str) -> np.random.Generator:
    key = [seed, 0 if dataset == "potsdam" else 1] + [ord(ch) for ch in tile]
    return np.random.default_rng(key)


def potsdam_origin(tile: str, size: int, gsd: float = 0.05) -> tuple[float, float]:
    """Upper-left corner (EPSG:32633) of a synthetic Potsdam tile; tiles abut edge to edge."""
    r, c = (int(v) for v in tile.split("_"))
    extent = size * gsd
    return _POTSDAM_ORIGIN[0] + (c - 7) * extent, _POTSDAM_ORIGIN[1] - (r - 2) * extent


def vaihingen_shape(tile: str, size: int) -> tuple[int, int]:
    """(rows, cols) of a synthetic Vaihingen area: non-square and varying like the real ones."""
    n = int(tile)
    return int(size * (1.15 + 0.1 * (n % 3))), int(size * (0.95 + 0.05 * (n % 2)))


def synthesize_potsdam(folder: str | Path, *, size: int = 800, tiles: int | list[str] = 4,
                       seed: int = 0, layout: Layout = "zips", nesting: Nesting = "real",
                       orthos: Iterable[str] = ("RGB", "IRRG", "RGBIR"),
                       height_scale: float = isprs.DEFAULT_HEIGHT_SCALE,
                       progress: bool = False) -> list[str]:
    """Write Potsdam-style archives into ``folder``.

    Args:
        folder: where the archives (or extracted folders) go.
        size: tile side in pixels at 5 cm (real tiles: 6000).
        tiles: number of tiles (alternating official train/test ids) or explicit ids.
        seed: random seed.
        layout: ``zips`` (individual archives), ``outer-zip`` (one ``Potsdam.zip`` wrapping
            them) or ``extracted`` (folders as unzipped).
        nesting: ``real`` (ortho and nDSM zips nest one folder, label zips are flat),
            ``flat`` (no zip nests a folder) or ``nested`` (every zip nests one folder).
        orthos: which ortho products to include (``RGB``, ``IRRG``, ``RGBIR``).
        height_scale: metres at nDSM grey level 255.
        progress: show a progress bar over tiles.

    Returns:
        The tile ids written.

    """
    tile_ids = default_tiles("potsdam", tiles) if isinstance(tiles, int) else list(tiles)
    orthos = list(orthos)
    gsd = isprs.NATIVE_GSD["potsdam"]
    nested = nesting in ("real", "nested")
    arcs: dict[str, _Archive] = {}
    for prod in orthos:
        zname = isprs.POTSDAM_ORTHOS[prod][0]
        arcs[prod] = _Archive(zname, Path(zname).stem if nested else None)
    nz = isprs.POTSDAM_NDSM_ZIP
    arcs["ndsm"] = _Archive(nz, Path(nz).stem if nested else None)
    for variant, zname in isprs.POTSDAM_LABEL_ZIPS.items():
        arcs[variant] = _Archive(zname, Path(zname).stem if nesting == "nested" else None)

    def members() -> Members:
        for tile in tqdm(tile_ids, desc="potsdam", unit="tile", disable=not progress):
            rng = _tile_rng(seed, "potsdam", tile)
            scene = generate_scene(rng, size, size, gsd, "potsdam")
            bands = render_bands(rng, scene, gsd, "potsdam", ("R", "G", "B", "IR"))
            x0, y0 = potsdam_origin(tile, size, gsd)
            transform = from_origin(x0, y0, gsd, gsd)
            for prod in orthos:
                _, pattern, names = isprs.POTSDAM_ORTHOS[prod]
                data = geotiff_bytes([bands[n] for n in names], transform, isprs.POTSDAM_CRS,
                                     alpha_last=prod == "RGBIR", photometric="RGB")
                yield arcs[prod], pattern.format(tile=tile), data
            del bands
            grey = encode_ndsm(scene.height, height_scale)
            if tile == "3_13":
                grey = grey[:-1]  # the real 03_13 nDSM is one row short (6000x5999)
            rr, cc = isprs.padded_tile(tile)
            name = isprs.POTSDAM_NDSM_PATTERNS["lastools"].format(rr=rr, cc=cc)
            yield arcs["ndsm"], name, pil_bytes(grey, "JPEG", quality=92)
            for variant, pattern in isprs.POTSDAM_LABEL_PATTERNS.items():
                rgb = color_labels(scene.classes, 3 if variant == "noBoundary" else 0)
                yield arcs[variant], pattern.format(tile=tile), pil_bytes(rgb, "TIFF")

    _write_archives(Path(folder), list(arcs.values()), members(), layout, isprs.POTSDAM_OUTER_ZIP)
    return tile_ids


def synthesize_vaihingen(folder: str | Path, *, size: int = 480, tiles: int | list[str] = 4,
                         seed: int = 0, layout: Layout = "zips", nesting: Nesting = "real",
                         height_scale: float = isprs.DEFAULT_HEIGHT_SCALE,
                         with_dsm: bool = True, progress: bool = False) -> list[str]:
    """Write Vaihingen-style archives into ``folder`` (tops without georeferencing).

    Args:
        folder: where the archives (or extracted folders) go.
        size: nominal area side in pixels at 9 cm (areas are non-square around it; real
            areas are about 2000x2500).
        tiles: number of areas (alternating official train/test) or explicit area numbers.
        seed: random seed.
        layout: ``zips``, ``outer-zip`` (``Vaihingen.zip``) or ``extracted``.
        nesting: ``real``/``flat`` (the main zip holds ``top/``, ``dsm/`` and ``ndsm/`` at
            its root, ground-truth zips are flat) or ``nested`` (every zip nests a folder).
        height_scale: metres at nDSM grey level 255.
        with_dsm: also write the absolute DSMs ``dsm/dsm_09cm_matching_area{N}.tif``.
        progress: show a progress bar over areas.

    Returns:
        The area numbers written (as strings).

    """
    if isinstance(tiles, int):
        tile_ids = default_tiles("vaihingen", tiles)
    else:
        tile_ids = [str(t) for t in tiles]
    gsd = isprs.NATIVE_GSD["vaihingen"]
    nested = nesting == "nested"
    main = _Archive(isprs.VAIHINGEN_ZIP, Path(isprs.VAIHINGEN_ZIP).stem if nested else None)
    gts = {v: _Archive(z, Path(z).stem if nested else None)
           for v, z in isprs.VAIHINGEN_LABEL_ZIPS.items()}

    def members() -> Members:
        for tile in tqdm(tile_ids, desc="vaihingen", unit="area", disable=not progress):
            rng = _tile_rng(seed, "vaihingen", tile)
            rows, cols = vaihingen_shape(tile, size)
            scene = generate_scene(rng, rows, cols, gsd, "vaihingen")
            b = render_bands(rng, scene, gsd, "vaihingen", ("IR", "R", "G"))
            top = pil_bytes(np.dstack([b["IR"], b["R"], b["G"]]), "TIFF")
            yield main, f"top/{isprs.VAIHINGEN_TOP_PATTERN.format(tile=tile)}", top
            if with_dsm:
                dsm = (scene.height + 255.0 + 3.0 * rng.random()).astype(np.float32)
                dsm_name = f"dsm/{isprs.VAIHINGEN_DSM_PATTERN.format(tile=tile)}"
                yield main, dsm_name, pil_bytes(dsm, "TIFF")
            ndsm = pil_bytes(encode_ndsm(scene.height, height_scale), "BMP")
            yield main, f"ndsm/{isprs.VAIHINGEN_NDSM_PATTERN.format(tile=tile)}", ndsm
            for variant, pattern in isprs.VAIHINGEN_LABEL_PATTERNS.items():
                rgb = color_labels(scene.classes, 2 if variant == "noBoundary" else 0)
                yield gts[variant], pattern.format(tile=tile), pil_bytes(rgb, "TIFF")

    _write_archives(Path(folder), [main, *gts.values()], members(), layout,
                    isprs.VAIHINGEN_OUTER_ZIP)
    return tile_ids


def synthesize_isprs(out: str | Path, *, size_potsdam: int = 800, size_vaihingen: int = 480,
                     tiles_potsdam: int = 4, tiles_vaihingen: int = 4, seed: int = 0,
                     layout: Layout = "zips", nesting: Nesting = "real",
                     orthos: Iterable[str] = ("RGB", "IRRG", "RGBIR"),
                     height_scale: float = isprs.DEFAULT_HEIGHT_SCALE,
                     progress: bool = False, overwrite: bool = False) -> dict[str, list[str]]:
    """Write ``out/potsdam`` and ``out/vaihingen`` archive folders.

    A tile count of 0 skips that dataset. See :func:`synthesize_potsdam` and
    :func:`synthesize_vaihingen` for the arguments. The archives carry the real ISPRS
    file names, so a dataset folder that is not empty (it may hold a real download) is
    refused unless ``overwrite``; then files of the same names are replaced and others
    are left alone.

    Returns:
        dataset -> tile ids written.

    Raises:
        UserError: a non-empty dataset folder without ``overwrite``, an unwritable ``out``.

    """
    from semimtl_geo.errors import UserError
    from semimtl_geo.outputs import check_output_dir

    if not tiles_potsdam and not tiles_vaihingen:
        raise UserError(
            "Nothing to synthesize: both tile counts are 0; pass --tiles-potsdam and/or "
            "--tiles-vaihingen of 1 or more."
        )
    out = check_output_dir(out)
    if not overwrite:
        for dataset, count in (("potsdam", tiles_potsdam), ("vaihingen", tiles_vaihingen)):
            folder = out / dataset
            present = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
            if count and present:
                shown = ", ".join(present[:3]) + (", ..." if len(present) > 3 else "")
                raise UserError(
                    f"'{folder}' is not empty ({shown}); synthetic archives use the real ISPRS "
                    "file names and could replace a real download there: pass --overwrite or "
                    "choose another -o folder."
                )
    written: dict[str, list[str]] = {}
    if tiles_potsdam:
        written["potsdam"] = synthesize_potsdam(
            out / "potsdam", size=size_potsdam, tiles=tiles_potsdam, seed=seed, layout=layout,
            nesting=nesting, orthos=orthos, height_scale=height_scale, progress=progress)
    if tiles_vaihingen:
        written["vaihingen"] = synthesize_vaihingen(
            out / "vaihingen", size=size_vaihingen, tiles=tiles_vaihingen, seed=seed,
            layout=layout, nesting=nesting, height_scale=height_scale, progress=progress)
    return written


__all__ = [
    "Scene",
    "cast_shadow",
    "color_labels",
    "default_tiles",
    "encode_ndsm",
    "generate_scene",
    "render_bands",
    "synthesize_isprs",
    "synthesize_potsdam",
    "synthesize_vaihingen",
]
