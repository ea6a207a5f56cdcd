"""Tile discovery: each tile's ortho, label and nDSM in the downloads, paired into jobs.

File names and products are the ISPRS ones of :mod:`semimtl_geo.data.isprs.facts`; the
files may be zipped, in zips in zips, or extracted (:mod:`semimtl_geo.data.isprs.archives`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from semimtl_geo.data import isprs
from semimtl_geo.data.isprs.archives import SourceFile, SourceIndex
from semimtl_geo.data.isprs.prepare.jobs import PrepareOptions, TileJob
from semimtl_geo.errors import UserError

_POTSDAM_TILE = r"(?P<tile>\d+_\d+)"


def _scan(index: SourceIndex, regex: str) -> dict[str, list[SourceFile]]:
    """Map tile id -> candidate files whose base name matches ``regex`` (group ``tile``)."""
    pat = re.compile(regex)
    out: dict[str, list[SourceFile]] = {}
    for name in index.names():
        m = pat.fullmatch(name)
        if m:
            out.setdefault(m.group("tile"), []).extend(index.find(name))
    return out


def _pattern_regex(pattern: str, tile_group: str) -> str:
    """Turn ``top_potsdam_{tile}_IRRG.tif`` into a regex with a named ``tile`` group."""
    esc = re.escape(pattern).replace(r"\{tile\}", tile_group)
    return esc.replace(r"\{rr\}_\{cc\}", r"(?P<tile>\d+_\d+)")


def _is_vaihingen_gt(f: SourceFile) -> bool:
    """Vaihingen tops and ground truth share base names: tell them apart by location.

    Ground truth lives in a ``*ground_truth*`` zip/folder, or flat outside any ``top``
    folder; tops live in a ``top`` folder (of ``ISPRS_semantic_labeling_Vaihingen.zip``).
    """
    if any("ground_truth" in p or p == "gts_for_participants" for p in f.parts):
        return True
    return f.parent != "top"


def potsdam_jobs(index: SourceIndex, root: Path, opts: PrepareOptions,
                  out_root: Path) -> tuple[list[TileJob], dict[str, Any]]:
    """Pair each Potsdam ortho of the chosen bands with its label and nDSM; product facts."""
    bands = list(isprs.POTSDAM_BAND_SETS[opts.potsdam_bands])
    # Products that can provide the chosen bands, best first (RGBIR holds every band).
    products = [opts.potsdam_bands] + (["RGBIR"] if opts.potsdam_bands != "RGBIR" else [])
    orthos: dict[str, tuple[SourceFile, str]] = {}
    for prod in reversed(products):
        _, pattern, _names = isprs.POTSDAM_ORTHOS[prod]
        for tile, files in _scan(index, _pattern_regex(pattern, _POTSDAM_TILE)).items():
            orthos[tile] = (files[0], prod)
    if not orthos:
        wanted = " or ".join(
            f"{isprs.POTSDAM_ORTHOS[p][0]} "
            f"(files {isprs.POTSDAM_ORTHOS[p][1].format(tile='{r}_{c}')})"
            for p in products
        )
        raise UserError(
            f"No Potsdam orthos found under '{root}': expected {wanted}, as the downloaded zip, "
            f"inside {isprs.POTSDAM_OUTER_ZIP}, or extracted."
        )
    lpat = isprs.POTSDAM_LABEL_PATTERNS[opts.labels]
    labels = _scan(index, _pattern_regex(lpat, _POTSDAM_TILE))
    if not labels:
        raise UserError(
            f"No Potsdam labels found under '{root}': expected "
            f"{isprs.POTSDAM_LABEL_ZIPS[opts.labels]} holding {lpat.format(tile='{r}_{c}')} "
            "files (zipped or extracted)."
        )
    ndsm_files: dict[str, list[SourceFile]] = {}
    npat = isprs.POTSDAM_NDSM_PATTERNS[opts.potsdam_ndsm]
    if opts.ndsm:
        raw = _scan(index, _pattern_regex(npat, _POTSDAM_TILE))
        ndsm_files = {"_".join(str(int(v)) for v in k.split("_")): v for k, v in raw.items()}
        if not ndsm_files:
            raise UserError(
                f"No Potsdam nDSM found under '{root}': expected {isprs.POTSDAM_NDSM_ZIP} holding "
                f"{npat.format(rr='{rr}', cc='{cc}')} files (zero-padded ids); pass --no-ndsm to "
                "prepare images and labels only."
            )
    jobs = []
    wanted_tiles = set(opts.tiles["potsdam"]) if opts.tiles and "potsdam" in opts.tiles else None
    for tile in sorted(orthos, key=tile_sort_key):
        if wanted_tiles is not None and tile not in wanted_tiles:
            continue
        src, prod = orthos[tile]
        file_bands = isprs.POTSDAM_ORTHOS[prod][2]
        jobs.append(TileJob(
            dataset="potsdam", tile=tile, split=isprs.split_of("potsdam", tile), image=src,
            band_indexes=[file_bands.index(b) + 1 for b in bands], bands=bands,
            label=(labels.get(tile) or [None])[0],
            ndsm=(ndsm_files.get(tile) or [None])[0] if opts.ndsm else None,
            out_root=str(out_root), target_gsd=opts.target_gsd,
            native_gsd=isprs.NATIVE_GSD["potsdam"],
        ))
    info = {
        "bands": bands,
        "image_product": sorted({orthos[j.tile][1] for j in jobs}),
        "label_file_pattern": lpat,
        "ndsm_file_pattern": npat if opts.ndsm else None,
    }
    return jobs, info


def vaihingen_jobs(index: SourceIndex, root: Path, opts: PrepareOptions,
                    out_root: Path) -> tuple[list[TileJob], dict[str, Any]]:
    """Pair each Vaihingen top with its ground truth and nDSM; product facts."""
    tile_re = r"(?P<tile>\d+)"
    tops: dict[str, SourceFile] = {}
    gts: dict[str, SourceFile] = {}
    for tile, files in _scan(index, _pattern_regex(isprs.VAIHINGEN_TOP_PATTERN, tile_re)).items():
        for f in files:
            if _is_vaihingen_gt(f):
                gts.setdefault(tile, f)
            else:
                tops.setdefault(tile, f)
    if not tops:
        raise UserError(
            f"No Vaihingen images found under '{root}': expected {isprs.VAIHINGEN_ZIP} holding "
            f"top/{isprs.VAIHINGEN_TOP_PATTERN.format(tile='{N}')} (zipped or extracted)."
        )
    if opts.labels == "noBoundary":
        pat = isprs.VAIHINGEN_LABEL_PATTERNS["noBoundary"]
        gts = {t: fs[0] for t, fs in _scan(index, _pattern_regex(pat, tile_re)).items()}
    if not gts:
        zname = isprs.VAIHINGEN_LABEL_ZIPS[opts.labels]
        pat = isprs.VAIHINGEN_LABEL_PATTERNS[opts.labels].format(tile="{N}")
        raise UserError(
            f"No Vaihingen labels found under '{root}': expected {zname} holding {pat} files "
            "(zipped or extracted)."
        )
    ndsm: dict[str, list[SourceFile]] = {}
    if opts.ndsm:
        ndsm = _scan(index, _pattern_regex(isprs.VAIHINGEN_NDSM_PATTERN, tile_re))
        if not ndsm:
            raise UserError(
                f"No Vaihingen nDSM found under '{root}': expected the nDSM files "
                f"ndsm/{isprs.VAIHINGEN_NDSM_PATTERN.format(tile='{N}')} (zipped or extracted); "
                "pass --no-ndsm to prepare images and labels only."
            )
    wanted_tiles = (set(opts.tiles["vaihingen"]) if opts.tiles and "vaihingen" in opts.tiles
                    else None)
    jobs = []
    for tile in sorted(tops, key=int):
        if wanted_tiles is not None and tile not in wanted_tiles:
            continue
        jobs.append(TileJob(
            dataset="vaihingen", tile=tile, split=isprs.split_of("vaihingen", tile),
            image=tops[tile], band_indexes=[1, 2, 3], bands=list(isprs.VAIHINGEN_BANDS),
            label=gts.get(tile), ndsm=(ndsm.get(tile) or [None])[0] if opts.ndsm else None,
            out_root=str(out_root), target_gsd=opts.target_gsd,
            native_gsd=isprs.NATIVE_GSD["vaihingen"],
        ))
    info = {
        "bands": list(isprs.VAIHINGEN_BANDS),
        "image_product": ["top"],
        "label_file_pattern": isprs.VAIHINGEN_LABEL_PATTERNS[opts.labels],
        "ndsm_file_pattern": isprs.VAIHINGEN_NDSM_PATTERN if opts.ndsm else None,
    }
    return jobs, info


def tile_sort_key(tile: str) -> tuple[int, ...]:
    """Numeric order of tile ids (``2_10`` after ``2_9``; Vaihingen ``10`` after ``9``)."""
    return tuple(int(v) for v in tile.split("_"))
