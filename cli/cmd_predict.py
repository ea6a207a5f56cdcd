"""``semimtl-geo predict``: georeferenced sliding-window inference of rasters."""

import warnings
from pathlib import Path

import click

from semimtl_geo.inference.engines import ENGINES


@click.command("predict")
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(path_type=Path),
              help="Output folder for <stem>_class.tif, <stem>_height.tif, styles and previews.")
@click.option("--checkpoint", required=True, type=click.Path(path_type=Path),
              help="Checkpoint written by 'semimtl-geo train', its run folder (model.pt), or "
                   "a model card (*.stac.json from train/export-onnx), which stands for its "
                   "checkpoint asset.")
@click.option("--device", default="auto", show_default=True,
              help="'cpu', 'cuda', 'cuda:1' or 'auto'.")
@click.option("--devices", "num_devices", type=click.IntRange(min=1), default=1,
              show_default=True,
              help="Spread the inputs over N GPUs (cuda:0..N-1) or, with --device cpu, N "
                   "worker processes sharing the CPU cores.")
@click.option("--engine", type=click.Choice(ENGINES), default="auto", show_default=True,
              help="Numeric engine: 'auto' picks bf16 on GPUs and CPUs with bf16, "
                   "onnxruntime on other CPUs; 'eager' is plain float32.")
@click.option("--batch-size", type=click.IntRange(min=1), default=4, show_default=True,
              help="Windows per forward pass.")
@click.option("--patch-size", type=click.IntRange(min=8), default=None,
              help="Window size in model pixels (default: the checkpoint's, usually 512).")
@click.option("--overlap", type=click.FloatRange(0.0, 1.0, max_open=True), default=None,
              help="Fraction of overlap between windows (default: the checkpoint's, 0.5).")
@click.option("--bands", default=None,
              help="Input bands fed to the model, in order: 1-based numbers or band "
                   "descriptions, e.g. '4,1,2'.")
@click.option("--aoi", type=click.Path(path_type=Path), default=None,
              help="Vector file (GeoPackage, Shapefile, GeoJSON): predict only inside "
                   "its polygons.")
@click.option("--tasks", default=None,
              help="Subset of the model's tasks, e.g. 'seg' or 'height' (default: all).")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs.")
@click.option("--vectorize", is_flag=True,
              help="Also write <stem>_classes.gpkg: polygons per class with area and height.")
@click.option("--resample/--no-resample", default=True, show_default=True,
              help="Resample windows to the checkpoint's training GSD when the input differs.")
@click.option("--preview/--no-preview", default=True, show_default=True,
              help="Write <stem>_preview.png (input, class, height quicklook).")
@click.option("--confidence", is_flag=True,
              help="Also write <stem>_confidence.tif: the blended probability of the "
                   "predicted class in percent (uint8 0-100, nodata 255) with a QML ramp, to "
                   "mask uncertain areas.")
@click.option("--rescale", type=click.Choice(["none", "minmax", "percentile"]), default=None,
              help="Map inputs whose pixel type differs from the training pixels (the "
                   "checkpoint records them, usually uint8 0-255): stretch each band's "
                   "2-98 % percentiles or min-max to that range, or 'none' to use the values "
                   "unchanged. Without it such inputs are refused.")
@click.option("--scale", "value_scale", type=float, default=None,
              help="Multiply input pixel values by F instead (e.g. 0.0625 for 12-bit data, "
                   "255 for 0-1 reflectances), clipped to the training range.")
@click.option("--domain", default=None,
              help="Models trained with model.norm=domain: the training dataset whose "
                   "normalisation statistics to use, e.g. potsdam (default: the first).")
def predict_cmd(
    inputs: tuple[str, ...],
    out_dir: Path,
    checkpoint: Path,
    device: str,
    num_devices: int,
    engine: str,
    batch_size: int,
    patch_size: int | None,
    overlap: float | None,
    bands: str | None,
    aoi: Path | None,
    tasks: str | None,
    overwrite: bool,
    vectorize: bool,
    resample: bool,
    preview: bool,
    confidence: bool,
    rescale: str | None,
    value_scale: float | None,
    domain: str | None,
) -> None:
    """Predict classes and heights of rasters, on exactly each input's pixel grid.

    INPUT is one or more GeoTIFF/GDAL raster files (VRTs too), folders, glob patterns,
    GDAL paths (/vsicurl/..., /vsis3/...) or URLs (https://..., s3://...); folders and
    patterns take the rasters GDAL opens, never semimtl-geo's own outputs, and what they
    skip is listed in one line. Each input gives Cloud-Optimized GeoTIFFs
    <stem>_class.tif (uint8, colour table, nodata 255) and <stem>_height.tif (float32,
    metres, nodata -9999) with QGIS styles <stem>_class.qml / <stem>_height.qml next to
    them; the files of one input are published together once all are complete, so a
    failure leaves the previous outputs as they were and adds no file. Windows overlap
    and are blended with a Hann weight so no seams show. A failing input is reported in
    one sentence and the others still run; the exit status is 1 if any input failed.
    With --devices N the inputs are shared among N GPUs or CPU worker processes, each
    input predicted once.
    """
    from tqdm.auto import tqdm

    from semimtl_geo.checkpoint import load_model_checkpoint
    from semimtl_geo.errors import UserError
    from semimtl_geo.inference.inputs import expand_inputs
    from semimtl_geo.inference.predictor import WindowPredictor
    from semimtl_geo.inference.raster import predict_raster
    from semimtl_geo.inference.sources import source_name, source_stem
    from semimtl_geo.model_card import resolve_checkpoint
    from semimtl_geo.outputs import check_output_dir

    check_output_dir(out_dir)
    if aoi is not None and not aoi.exists():
        raise UserError(f"AOI file '{aoi}' does not exist; check the path.")
    selection = expand_inputs(inputs)
    if line := selection.skipped_line():
        click.echo(f"Note: {line}", err=True)
    for sentence in selection.problems:
        click.echo(f"Error: {sentence}", err=True)
    files = selection.files
    checkpoint = resolve_checkpoint(checkpoint)
    loaded = load_model_checkpoint(checkpoint, domain=domain)
    stems: dict[str, Path | str] = {}
    failures = len(selection.problems)
    if num_devices > 1:
        from semimtl_geo.inference.parallel import PredictJob, predict_parallel, worker_devices

        workers = worker_devices(device, num_devices)
        todo: list[Path | str] = []
        for path in files:
            stem = source_stem(path)
            if stem in stems:
                click.echo(f"Error: '{path}' has the same name as '{stems[stem]}' and would "
                           "overwrite its outputs; rename one or predict them separately.",
                           err=True)
                failures += 1
                continue
            stems[stem] = path
            todo.append(path)
        job = PredictJob(checkpoint=checkpoint, out_dir=out_dir, tasks=tasks, engine=engine,
                         batch_size=batch_size, patch_size=patch_size, overlap=overlap,
                         bands=bands, aoi=aoi, overwrite=overwrite, vectorize=vectorize,
                         resample=resample, preview=preview, confidence=confidence,
                         rescale=rescale, value_scale=value_scale, domain=domain)
        stderr = click.get_text_stream("stderr")
        with tqdm(total=0, desc=f"{len(todo)} files on {len(workers)} workers",
                  unit="win") as bar:
            failures += predict_parallel(
                todo, job, workers, echo=tqdm.write,
                echo_err=lambda text: tqdm.write(text, file=stderr), bar=bar,
            )
        if failures:
            click.echo(f"{failures} input(s) failed; see the errors above.", err=True)
            click.get_current_context().exit(1)
        return
    predictor = WindowPredictor(loaded, device=device, tasks=tasks, engine=engine)

    def show_warning(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001, ANN202
        tqdm.write(f"Warning: {message}", file=click.get_text_stream("stderr"))

    with warnings.catch_warnings():
        warnings.simplefilter("always", UserWarning)
        warnings.showwarning = show_warning
        files_bar = tqdm(files, desc="files", unit="file", disable=len(files) < 2)
        for path in files_bar:
            stem = source_stem(path)
            if stem in stems:
                tqdm.write(f"Error: '{path}' has the same name as '{stems[stem]}' and would "
                           "overwrite its outputs; rename one or predict them separately.",
                           file=click.get_text_stream("stderr"))
                failures += 1
                continue
            stems[stem] = path
            with tqdm(total=0, desc=source_name(path), unit="win", leave=False) as bar:
                def set_total(n: int, bar: tqdm = bar) -> None:
                    bar.total = n
                    bar.refresh()

                try:
                    result = predict_raster(
                        predictor, path, out_dir, patch_size=patch_size, overlap=overlap,
                        batch_size=batch_size, bands=bands, aoi=aoi, overwrite=overwrite,
                        vectorize=vectorize, resample=resample, preview=preview,
                        on_windows=bar.update, on_grid=set_total, confidence=confidence,
                        rescale=rescale, value_scale=value_scale,
                    )
                except UserError as exc:
                    tqdm.write(f"Error: {path}: {exc}", file=click.get_text_stream("stderr"))
                    failures += 1
                    continue
            names = ", ".join(p.name for p in result.paths())
            tqdm.write(f"{source_name(path)}: {result.windows} windows -> {out_dir}/ ({names})")
    if failures:
        click.echo(f"{failures} input(s) failed; see the errors above.", err=True)
        click.get_current_context().exit(1)


COMMANDS = [predict_cmd]
