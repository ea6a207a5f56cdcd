"""``semimtl-geo prepare-isprs`` and ``semimtl-geo synthesize-isprs``: ISPRS data commands."""

from pathlib import Path

import click

from semimtl_geo.data import isprs


@click.command("prepare-isprs")
@click.option("--potsdam", type=click.Path(path_type=Path), default=None,
              help="Folder (or zip) holding the Potsdam download: the individual zips, "
                   "Potsdam.zip, or extracted folders.")
@click.option("--vaihingen", type=click.Path(path_type=Path), default=None,
              help="Folder (or zip) holding the Vaihingen download.")
@click.option("-o", "--out", type=click.Path(path_type=Path), required=True,
              help="Output folder for the prepared tiles and manifest.json.")
@click.option("--bands", "potsdam_bands", type=click.Choice(list(isprs.POTSDAM_BAND_SETS)),
              default="IRRG", show_default=True,
              help="Potsdam image bands (IRRG as in the paper; RGBIR orthos are used when the "
                   "chosen product is missing).")
@click.option("--labels", type=click.Choice(["all", "noBoundary"]), default="all",
              show_default=True,
              help="Full labels, or eroded labels whose boundary pixels become 255.")
@click.option("--gsd", "target_gsd", type=float, default=0.09, show_default=True,
              help="Target ground sampling distance in metres per pixel.")
@click.option("--ndsm/--no-ndsm", default=True, show_default=True,
              help="Prepare the nDSM height layer (required unless --no-ndsm).")
@click.option("--potsdam-ndsm", type=click.Choice(list(isprs.POTSDAM_NDSM_PATTERNS)),
              default="lastools", show_default=True, help="Which Potsdam nDSM product to use.")
@click.option("--potsdam-height-scale", type=float, default=isprs.DEFAULT_HEIGHT_SCALE,
              show_default=True, help="Metres per normalised Potsdam nDSM unit (grey level 255).")
@click.option("--vaihingen-height-scale", type=float, default=isprs.DEFAULT_HEIGHT_SCALE,
              show_default=True, help="Metres per normalised Vaihingen nDSM unit (grey level 255).")
@click.option("--tiles", "tiles", multiple=True,
              help="Only these tile ids (e.g. 2_10 for Potsdam, 1 for Vaihingen area 1); "
                   "repeatable; a dataset given no ids is prepared in full.")
@click.option("-j", "--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Tiles prepared in parallel (each worker holds about one tile in memory).")
@click.option("--overwrite", is_flag=True,
              help="Replace prepared tiles already in the output folder.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@click.option("--preview/--no-preview", default=True, show_default=True,
              help="Write OUT/<dataset>/preview.png of one prepared tile.")
def prepare_isprs_cmd(potsdam, vaihingen, out, potsdam_bands, labels, target_gsd, ndsm,
                      potsdam_ndsm, potsdam_height_scale, vaihingen_height_scale, tiles, workers,
                      overwrite, no_progress, preview) -> None:
    """Prepare ISPRS Potsdam/Vaihingen downloads as aligned GeoTIFF tiles plus manifest.json.

    Writes, per tile, image / label (class ids, 255 = ignore) / nDSM GeoTIFFs on one grid at
    the target GSD, and OUT/manifest.json (sources, bands, classes, splits, statistics,
    patch counts). Tiles that fail are listed and the command exits with status 1.
    """
    from semimtl_geo.data.isprs.prepare import PrepareOptions, prepare_isprs

    tile_sel = None
    if tiles:
        # Potsdam ids look like 2_10, Vaihingen ids are area numbers; a dataset none of the
        # ids belongs to is prepared in full.
        by_ds = {"potsdam": [t for t in tiles if "_" in t],
                 "vaihingen": [t for t in tiles if "_" not in t]}
        tile_sel = {ds: ids for ds, ids in by_ds.items() if ids}
    opts = PrepareOptions(
        target_gsd=target_gsd, potsdam_bands=potsdam_bands, labels=labels, ndsm=ndsm,
        potsdam_ndsm=potsdam_ndsm,
        height_scale={"potsdam": potsdam_height_scale, "vaihingen": vaihingen_height_scale},
        workers=workers, overwrite=overwrite, tiles=tile_sel, progress=not no_progress,
        preview=preview,
    )
    report = prepare_isprs(potsdam, vaihingen, out, opts)
    ok = [r for r in report.results if r.ok]
    click.echo(f"Prepared {len(ok)} of {len(report.results)} tiles into {out} "
               f"(manifest: {report.manifest_path}).")
    for key, colors in report.unknown_colors.items():
        total = sum(colors.values())
        top = sorted(colors.items(), key=lambda kv: -kv[1])[:5]
        listed = ", ".join(f"({c}): {n}" for c, n in top)
        click.echo(f"Warning: {key}: {total} label pixels had colours outside the class table and "
                   f"became ignore (255): {listed}.", err=True)
    for r in report.results:
        if r.ok and r.record.get("ndsm_note"):
            click.echo(f"Note: {r.dataset} {r.tile}: {r.record['ndsm_note']}.", err=True)
    if report.failed:
        for r in report.failed:
            click.echo(f"Failed: {r.dataset} tile {r.tile}: {r.error}.", err=True)
        click.echo(f"Error: {len(report.failed)} tile(s) failed; fix or re-download the files "
                   "named above and run again with --overwrite.", err=True)
        click.get_current_context().exit(1)


@click.command("synthesize-isprs")
@click.option("-o", "--out", type=click.Path(path_type=Path), required=True,
              help="Output folder; archives go to OUT/potsdam and OUT/vaihingen.")
@click.option("--size-potsdam", type=click.IntRange(min=16), default=800, show_default=True,
              help="Potsdam tile side in pixels at 5 cm (real: 6000).")
@click.option("--size-vaihingen", type=click.IntRange(min=16), default=480, show_default=True,
              help="Nominal Vaihingen area side in pixels at 9 cm (real: about 2000-2500).")
@click.option("--tiles-potsdam", type=click.IntRange(min=0, max=38), default=4, show_default=True,
              help="Number of Potsdam tiles (alternating official train/test ids; 0 skips).")
@click.option("--tiles-vaihingen", type=click.IntRange(min=0, max=33), default=4,
              show_default=True, help="Number of Vaihingen areas (0 skips).")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@click.option("--layout", type=click.Choice(["zips", "outer-zip", "extracted"]), default="zips",
              show_default=True,
              help="Individual zips, one outer Potsdam.zip/Vaihingen.zip, or extracted folders.")
@click.option("--nesting", type=click.Choice(["real", "flat", "nested"]), default="real",
              show_default=True,
              help="Folder nesting inside the zips: as the real downloads, none, or one "
                   "folder each.")
@click.option("--orthos", default="RGB,IRRG,RGBIR", show_default=True,
              help="Comma-separated Potsdam ortho products to include.")
@click.option("--overwrite", is_flag=True,
              help="Write into OUT/potsdam and OUT/vaihingen even when they are not empty "
                   "(files with the same names are replaced).")
def synthesize_isprs_cmd(out, size_potsdam, size_vaihingen, tiles_potsdam, tiles_vaihingen, seed,
                         layout, nesting, orthos, overwrite) -> None:
    """Write small synthetic Potsdam/Vaihingen archives with the real names and formats.

    Scenes are procedurally generated urban blocks whose heights agree with their classes;
    use them to try the pipeline without the real data (deterministic for a seed).
    """
    from semimtl_geo.data.isprs.synthesize import synthesize_isprs
    from semimtl_geo.errors import UserError

    products = [p.strip() for p in orthos.split(",") if p.strip()]
    bad = [p for p in products if p not in isprs.POTSDAM_ORTHOS]
    if bad or not products:
        raise UserError(f"Unknown ortho product(s) {bad or orthos!r}; use a comma-separated subset "
                        f"of {','.join(isprs.POTSDAM_ORTHOS)}.")
    written = synthesize_isprs(out, size_potsdam=size_potsdam, size_vaihingen=size_vaihingen,
                               tiles_potsdam=tiles_potsdam, tiles_vaihingen=tiles_vaihingen,
                               seed=seed, layout=layout, nesting=nesting, orthos=products,
                               progress=True, overwrite=overwrite)
    for dataset, tiles in written.items():
        click.echo(f"{dataset}: {len(tiles)} tiles ({', '.join(tiles)}) in {Path(out) / dataset}")


COMMANDS = [prepare_isprs_cmd, synthesize_isprs_cmd]
