"""Predict every GeoTIFF in a folder with a trained checkpoint, from Python.

What it shows:

* :func:`semimtl_geo.checkpoint.load_model_checkpoint` reads ``model.pt`` (network plus
  the metadata inference needs: bands, normalisation, GSD, classes, height scale);
* :class:`semimtl_geo.inference.WindowPredictor` holds the model on a device and runs
  batches of raw pixel windows (normalisation, softmax, heights in metres);
* :func:`semimtl_geo.inference.predict_raster` streams one raster through overlapping,
  Hann-blended windows and writes Cloud-Optimized GeoTIFFs on exactly the input grid:
  ``<stem>_class.tif`` (uint8 class ids, colour table, nodata 255) and
  ``<stem>_height.tif`` (float32 metres, nodata -9999), QGIS ``.qml`` styles, a PNG
  preview and, with ``--vectorize``, ``<stem>_classes.gpkg`` polygons;
* a batch loop that reports a failing file (unreadable, wrong band count...) in one
  sentence and goes on with the others; the exit status is 1 if any file failed.

Run it on the test tiles prepared by ``train_from_python.py``::

    .venv/bin/python examples/predict_folder.py runs/example/prepared/potsdam/image \\
        --checkpoint runs/example/run/model.pt -o runs/example/predict --vectorize

Each input must have the checkpoint's bands in order (IR-R-G for the ISPRS models).
"""

import argparse
import sys
from pathlib import Path

from rasterio.errors import RasterioError
from tqdm.auto import tqdm

from semimtl_geo.checkpoint import load_model_checkpoint
from semimtl_geo.errors import UserError
from semimtl_geo.inference import RasterOutputs, WindowPredictor, predict_raster

SUFFIXES = (".tif", ".tiff")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line flags: input folder, checkpoint, output folder and window settings."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("folder", type=Path, help="folder holding the GeoTIFFs to predict")
    p.add_argument("--checkpoint", type=Path, required=True, help="model.pt from training")
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    p.add_argument("--device", default="auto", help="'cpu', 'cuda', 'cuda:1' or 'auto'")
    p.add_argument("--patch-size", type=int, default=None,
                   help="window size in model pixels (default: the checkpoint's)")
    p.add_argument("--overlap", type=float, default=None,
                   help="window overlap fraction (default: the checkpoint's)")
    p.add_argument("--batch-size", type=int, default=4, help="windows per forward pass")
    p.add_argument("--vectorize", action="store_true",
                   help="also write <stem>_classes.gpkg polygons with area and height")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    return p.parse_args(argv)


def predict_folder(predictor: WindowPredictor, folder: Path, out_dir: Path,
                   **options) -> tuple[dict[Path, RasterOutputs], dict[Path, str]]:
    """Predict each ``*.tif`` of ``folder`` into ``out_dir``; keep going past failures.

    Args:
        predictor: the loaded model on its device.
        folder: input folder (not searched recursively).
        out_dir: output folder (created).
        **options: keyword arguments of :func:`predict_raster` (``patch_size``,
            ``overlap``, ``batch_size``, ``vectorize``, ``overwrite``...).

    Returns:
        The outputs of each file that succeeded and the error of each that failed.

    """
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES)
    if not files:
        raise UserError(f"Folder '{folder}' holds no .tif files; check the path.")
    done: dict[Path, RasterOutputs] = {}
    failed: dict[Path, str] = {}
    for path in tqdm(files, desc="files", unit="file", disable=len(files) < 2):
        with tqdm(total=0, desc=path.name, unit="win", leave=False) as bar:
            def set_total(n: int, bar: tqdm = bar) -> None:
                bar.total = n
                bar.refresh()

            try:
                done[path] = predict_raster(predictor, path, out_dir, on_grid=set_total,
                                            on_windows=bar.update, **options)
            except (UserError, RasterioError) as exc:
                # UserError: the library's one-sentence diagnosis (corrupt file, wrong band
                # count, existing output...). RasterioError: a read failing mid-file.
                failed[path] = str(exc)
                tqdm.write(f"FAILED {path.name}: {exc}", file=sys.stderr)
                continue
        names = ", ".join(p.name for p in done[path].paths())
        tqdm.write(f"{path.name}: {done[path].windows} windows -> {names}")
    return done, failed


def main(argv: list[str] | None = None) -> int:
    """Predict the folder; return 0 if every file succeeded, else 1."""
    args = parse_args(argv)
    try:
        loaded = load_model_checkpoint(args.checkpoint)
        predictor = WindowPredictor(loaded, device=args.device)
        meta = predictor.meta
        print(f"model: tasks {', '.join(predictor.tasks)}, bands {', '.join(meta.bands)}, "
              f"GSD {meta.gsd} m, classes {', '.join(meta.classes.names)}, "
              f"device {predictor.device}")
        done, failed = predict_folder(
            predictor, args.folder, args.output, patch_size=args.patch_size,
            overlap=args.overlap, batch_size=args.batch_size, vectorize=args.vectorize,
            overwrite=args.overwrite,
        )
    except UserError as exc:  # nothing could run: bad checkpoint, empty folder...
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    print(f"{len(done)} file(s) predicted into {args.output}, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
