"""``semimtl-geo prepare-isprs``: check the options, plan, prepare the tiles, write the manifest."""

from __future__ import annotations

import dataclasses
import math
import multiprocessing
import shutil
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from semimtl_geo import __version__
from semimtl_geo.atomic import atomic_write_json
from semimtl_geo.data import isprs
from semimtl_geo.data.isprs.archives import SourceIndex
from semimtl_geo.data.isprs.manifest import MANIFEST_FORMAT, MANIFEST_NAME
from semimtl_geo.data.isprs.prepare.discovery import potsdam_jobs, vaihingen_jobs
from semimtl_geo.data.isprs.prepare.jobs import PrepareOptions, PrepareReport, TileJob, TileResult
from semimtl_geo.data.isprs.prepare.preview import write_preview
from semimtl_geo.data.isprs.prepare.summary import dataset_entry, load_existing_manifest
from semimtl_geo.data.isprs.prepare.tile import prepare_tile
from semimtl_geo.errors import UserError
from semimtl_geo.outputs import check_output_dir


def _check_output(out: Path, dataset: str, overwrite: bool) -> None:
    target = out / dataset
    if target.exists() and any(target.rglob("*.tif")):
        if not overwrite:
            raise UserError(
                f"'{target}' already holds prepared {dataset} tiles; pass --overwrite to "
                "replace them."
            )
        shutil.rmtree(target)


def prepare_isprs(potsdam: str | Path | None, vaihingen: str | Path | None, out: str | Path,
                  options: PrepareOptions | None = None) -> PrepareReport:
    """Prepare one or both ISPRS datasets into ``out`` (see the module docstring).

    Args:
        potsdam: folder (or zip) holding the Potsdam download, or None.
        vaihingen: folder (or zip) holding the Vaihingen download, or None.
        out: output folder.
        options: preparation options.

    Returns:
        The report; ``report.failed`` lists tiles that could not be prepared.

    Raises:
        UserError: nothing to do, missing/corrupt archives, an existing output without
            ``overwrite``.

    """
    opts = options or PrepareOptions()
    if potsdam is None and vaihingen is None:
        raise UserError(
            "Nothing to prepare; pass --potsdam and/or --vaihingen with the download folders."
        )
    if opts.potsdam_bands not in isprs.POTSDAM_BAND_SETS:
        raise UserError(
            f"Unknown Potsdam bands '{opts.potsdam_bands}'; use one of "
            f"{', '.join(isprs.POTSDAM_BAND_SETS)}."
        )
    if opts.labels not in ("all", "noBoundary"):
        raise UserError(f"Unknown label variant '{opts.labels}'; use 'all' or 'noBoundary'.")
    if not (opts.target_gsd > 0 and math.isfinite(opts.target_gsd)):
        raise UserError(f"Target GSD must be positive metres per pixel, got {opts.target_gsd}.")
    for dataset, scale in opts.height_scale.items():
        if not (scale > 0 and math.isfinite(scale)):
            raise UserError(
                f"The {dataset} height scale must be positive metres per nDSM unit, got {scale}; "
                f"fix --{dataset}-height-scale."
            )
    out = check_output_dir(Path(out))
    given = {"potsdam": potsdam, "vaihingen": vaihingen}
    for dataset, ids in (opts.tiles or {}).items():
        if ids and given.get(dataset) is None:
            raise UserError(
                f"--tiles {', '.join(ids)} name{'s' if len(ids) == 1 else ''} {dataset} tiles "
                f"but --{dataset} was not given; pass the {dataset} download folder too or "
                "drop those ids."
            )

    plans: list[tuple[str, Path, list[TileJob], dict[str, Any]]] = []
    for dataset, root in given.items():
        if root is None:
            continue
        root = Path(root)
        index = SourceIndex(root)
        builder = potsdam_jobs if dataset == "potsdam" else vaihingen_jobs
        jobs, info = builder(index, root, opts, out)
        if not jobs:
            raise UserError(f"No {dataset} tiles selected under '{root}'; check the --tiles ids.")
        wanted = (opts.tiles or {}).get(dataset) or []
        missing = sorted(set(wanted) - {j.tile for j in jobs})
        if missing:
            raise UserError(
                f"Tile id(s) {', '.join(missing)} are not in the {dataset} download under "
                f"'{root}'; check the --tiles ids."
            )
        info["archives"] = index.zips
        plans.append((dataset, root, jobs, info))
    for dataset, _, _, _ in plans:
        _check_output(out, dataset, opts.overwrite)
    out.mkdir(parents=True, exist_ok=True)

    all_jobs = [j for _, _, jobs, _ in plans for j in jobs]
    results: list[TileResult] = []
    bar = tqdm(total=len(all_jobs), desc="prepare-isprs", unit="tile", disable=not opts.progress)
    if opts.workers > 1 and len(all_jobs) > 1:
        # spawn, not fork: the CLI process may hold threads (torch, GDAL) that fork would copy
        # in an inconsistent state.
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=opts.workers, mp_context=ctx) as pool:
            futures = {pool.submit(prepare_tile, j): j for j in all_jobs}
            for fut in as_completed(futures):
                res = fut.result()
                results.append(res)
                bar.set_postfix_str(f"{res.dataset} {res.tile}")
                bar.update()
    else:
        for j in all_jobs:
            bar.set_postfix_str(f"{j.dataset} {j.tile}")
            results.append(prepare_tile(j))
            bar.update()
    bar.close()

    manifest = load_existing_manifest(out)
    manifest.format = MANIFEST_FORMAT
    manifest.tool = f"semimtl-geo {__version__}"
    manifest.created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    manifest.target_gsd = opts.target_gsd
    manifest.classes = isprs.CLASSES
    manifest.ignore_index = isprs.IGNORE
    manifest.patch_size = opts.patch_size
    manifest.overlap = opts.overlap
    for dataset, root, _jobs, info in plans:
        mine = [r for r in results if r.dataset == dataset]
        manifest.datasets[dataset] = dataset_entry(dataset, root, mine, info, opts)
    manifest_path = out / MANIFEST_NAME
    atomic_write_json(manifest_path, manifest.to_dict())
    if opts.preview:
        for dataset, _, _, _ in plans:
            tiles = manifest.datasets[dataset].tiles
            if tiles:
                test = [t for t in tiles if t.split == "test"]
                write_preview(out, dataset, dataclasses.asdict((test or tiles)[0]))
    order = {(j.dataset, j.tile): i for i, j in enumerate(all_jobs)}
    results.sort(key=lambda r: order[(r.dataset, r.tile)])
    return PrepareReport(manifest_path, results)
