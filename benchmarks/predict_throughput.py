r"""End-to-end throughput and peak memory of ``predict``, side by side in one run.

Measures, on a synthetic uint8 3-band GeoTIFF (tiled, EPSG:32633, 0.09 m), cases that
run in turn (``--repeats`` rounds, cases interleaved, so the load of a shared machine
falls on all of them alike):

* ``ours``: :func:`semimtl_geo.inference.predict_raster` of this checkout, with
  ``--engine`` (``auto`` by default), at ``--overlap``: read + model + Hann blending +
  COG writing (class + height, overviews, QML; no PNG preview);
* ``ref``: the same call with ``semimtl_geo`` imported from a ``git worktree`` of
  ``--ref`` (default :data:`REF_DEFAULT`, main just before issue 14 landed; its commit
  is recorded) — "today's" pipeline, at the same overlap, on its own default (eager
  float32 on CPU);
* ``baseline``: the plain torchgeo loop: ``RasterDataset`` + ``GriddedPatchSampler``
  (size = patch, stride = patch x (1 - overlap), the same overlap), batch 1, eager
  float32, each patch's arg-max/height written into tiled GeoTIFFs (last write wins),
  no blending, no read-ahead. Its grid has the same windows as ours where the stride
  divides the raster (size and stride are given in CRS units with the stride a hair
  longer, so that float rounding of ``(width - size) / stride`` does not add a row and
  a column of windows hanging off the raster); both window counts are recorded.

Every case runs in a fresh child process so its peak RSS (``ru_maxrss``) is its own.
Megapixels/s = raster pixels / wall seconds. CPU seconds (``time.process_time`` of the
child over the same span: all its threads, GDAL's included) are recorded too: on a
machine other jobs share, wall time mostly measures their load, CPU time the work (use
``--threads 1`` so idle OpenMP threads spinning on busy cores do not count). Ratios are
per round (``ours`` over the other case of the same round), by wall and by CPU seconds,
and the median over rounds is reported, with the load average before each case. Examples::

    # predict vs the plain loop, the demo's network (ResNet18, output stride 16)
    python benchmarks/predict_throughput.py --sizes 2048 --model resnet18 \
        --output-stride 16 --cases ours baseline --repeats 2
    # the pipeline alone (3-convolution stand-in), same engine, against today's main
    python benchmarks/predict_throughput.py --sizes 6000 --model tiny --engine eager \
        --cases ours ref --repeats 3
    # on a GPU
    python benchmarks/predict_throughput.py --sizes 20000 --model resnet101 \
        --output-stride 8 --device cuda --cases ours baseline

``--model tiny`` is a 3-layer convolutional stand-in that makes the run I/O-, blending-
and writing-bound (what the pipeline itself costs); ``resnet18``/``resnet101`` are
:class:`semimtl_geo.models.MultiTaskNet` generators (random weights; speed does not
depend on them).
"""

import argparse
import csv
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
#: "Today's main" for the ``ref`` case: main just before issue 14's pipeline landed
#: (``--ref main`` would compare this code with itself once it has landed).
REF_DEFAULT = "b845855"
REPO = Path(__file__).resolve().parents[1]


def make_raster(path: Path, size: int, rows: int | None = None) -> Path:
    """Write a ``rows x size`` (default square) 3-band textured uint8 GeoTIFF by blocks."""
    import rasterio
    from affine import Affine

    from semimtl_geo.atomic import atomic_output

    if path.exists():
        return path
    rows = rows or size
    profile = {"driver": "GTiff", "width": size, "height": rows, "count": 3, "dtype": "uint8",
               "crs": "EPSG:32633", "transform": Affine(0.09, 0, 500000.0, 0, -0.09, 5_800_000.0),
               "tiled": True, "blockxsize": 512, "blockysize": 512, "photometric": "MINISBLACK",
               "BIGTIFF": "IF_SAFER"}
    xx = np.arange(size, dtype=np.float32)[None, :]
    with atomic_output(path, ".partial.tif") as tmp, rasterio.open(tmp, "w", **profile) as dst:
        for y0 in range(0, rows, 512):
            yy = np.arange(y0, min(y0 + 512, rows), dtype=np.float32)[:, None]
            bands = [130 + 90 * np.sin(0.013 * (b + 1) * xx + 0.7 * b) * np.cos(0.021 * yy + b)
                     for b in range(3)]
            block = np.clip(np.stack(bands), 0, 255).astype(np.uint8)
            dst.write(block, window=rasterio.windows.Window(0, y0, size, block.shape[1]))
    return path


def build_model(name: str, output_stride: int):
    """The network under test, random weights, eval mode."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    if name == "tiny":
        class TinyNet(nn.Module):
            """Three convolutions: a stand-in that makes the pipeline the bottleneck."""

            tasks = ("seg", "height")
            in_channels = 3
            num_classes = 6

            def __init__(self) -> None:
                super().__init__()
                self.body = nn.Sequential(nn.Conv2d(3, 8, 3, stride=4, padding=1), nn.ReLU(),
                                          nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                                          nn.Conv2d(8, 7, 1))

            def forward(self, x):  # noqa: ANN001, ANN202
                y = nn.functional.interpolate(self.body(x), size=x.shape[-2:], mode="bilinear")
                return {"seg": y[:, :6], "height": y[:, 6:]}

        return TinyNet().eval()
    from semimtl_geo.models import MultiTaskNet

    return MultiTaskNet(name, 3, 6, ("seg", "height"), None, output_stride).eval()


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_ours(args: argparse.Namespace) -> dict:
    """``predict_raster`` of whichever ``semimtl_geo`` is importable (this one or --ref)."""
    import inspect

    import semimtl_geo
    from semimtl_geo.checkpoint import LoadedModel, ModelMeta
    from semimtl_geo.inference import WindowPredictor, predict_raster

    model = build_model(args.model, args.output_stride)
    meta = ModelMeta(gsd=0.09, patch_size=args.patch_size, overlap=args.overlap,
                     height_scale=30.0)
    kwargs = {}
    if "engine" in inspect.signature(WindowPredictor).parameters:
        kwargs["engine"] = args.engine
    start, cpu = time.perf_counter(), time.process_time()  # engine set-up is part of it
    predictor = WindowPredictor(LoadedModel(model, meta, {}), device=args.device, **kwargs)
    out = Path(args.workdir) / f"out_{args.case}_{Path(args.raster).stem}"
    result = predict_raster(predictor, args.raster, out, batch_size=args.batch_size,
                            overwrite=True, preview=False)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "cpu_seconds": time.process_time() - cpu,
            "windows": result.windows,
            "engine": getattr(predictor, "engine_name", "(none: eager fp32 on CPU)"),
            "module": str(Path(semimtl_geo.__file__).parent)}


def run_baseline(args: argparse.Namespace) -> dict:
    """Plain loop: torchgeo gridded sampler -> model -> argmax -> windowed GeoTIFF writes.

    Batch 1, eager float32, patches every ``patch x (1 - overlap)`` pixels; a later patch
    overwrites the overlap of an earlier one (last write wins).
    """
    import rasterio
    import torch
    from rasterio.windows import Window
    from torchgeo.datasets import RasterDataset
    from torchgeo.samplers import GriddedPatchSampler, Units

    model = build_model(args.model, args.output_stride).to(args.device)
    mean = torch.tensor([0.5] * 3).view(1, 3, 1, 1).to(args.device)
    std = torch.tensor([0.25] * 3).view(1, 3, 1, 1).to(args.device)
    start, cpu = time.perf_counter(), time.process_time()
    with rasterio.open(args.raster) as src:
        profile = {"driver": "GTiff", "width": src.width, "height": src.height, "count": 1,
                   "crs": src.crs, "transform": src.transform, "tiled": True,
                   "blockxsize": 512, "blockysize": 512, "compress": "deflate",
                   "BIGTIFF": "IF_SAFER"}
        left, top, res = src.transform.c, src.transform.f, src.transform.a
        width, height = src.width, src.height
    dataset = RasterDataset(paths=[args.raster], cache=False)
    stride = max(1, int(args.patch_size * (1.0 - args.overlap)))
    # In pixel units torchgeo computes ceil((width - size) / stride) in CRS units, where
    # 0.09 m pixels round 6 up to 6.000000001 and add a row and a column of windows
    # (64 instead of 49 at 2048 px); a stride longer by 1e-9 keeps the same grid as ours.
    sampler = GriddedPatchSampler(dataset, size=args.patch_size * res,
                                  stride=stride * res * (1 + 1e-9), units=Units.CRS)
    out = Path(args.workdir) / f"out_baseline_{Path(args.raster).stem}"
    out.mkdir(parents=True, exist_ok=True)
    windows = 0
    with rasterio.open(out / "class.tif", "w", dtype="uint8", nodata=255, **profile) as cdst, \
            rasterio.open(out / "height.tif", "w", dtype="float32", **profile) as hdst:
        queries = list(sampler)

        def flush(batch: list, images: list) -> None:
            x = (torch.stack(images).to(args.device).float() / 255.0 - mean) / std
            with torch.inference_mode():
                pred = model(x)
            cls = pred["seg"].argmax(1).to(torch.uint8).cpu().numpy()
            hgt = (pred["height"][:, 0] * 30.0).float().cpu().numpy()
            for q, c, h in zip(batch, cls, hgt):
                col = int(round((q[0].start - left) / res))
                row = int(round((top - q[1].stop) / res))
                c0, r0 = max(col, 0), max(row, 0)
                c1, r1 = min(col + c.shape[1], width), min(row + c.shape[0], height)
                if c1 <= c0 or r1 <= r0:
                    continue
                win = Window(c0, r0, c1 - c0, r1 - r0)
                cdst.write(c[r0 - row:r1 - row, c0 - col:c1 - col], 1, window=win)
                hdst.write(h[r0 - row:r1 - row, c0 - col:c1 - col], 1, window=win)

        batch, images = [], []
        for query in queries:
            images.append(dataset[query]["image"])
            batch.append(query)
            windows += 1
            if len(batch) == 1:  # the plain loop: batch 1
                flush(batch, images)
                batch, images = [], []
        if batch:
            flush(batch, images)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "cpu_seconds": time.process_time() - cpu, "windows": windows,
            "engine": "eager fp32, batch 1"}


def set_cli_environment() -> str:
    """Set the environment the imported version's CLI entry point sets, before torch loads.

    Versions with :mod:`semimtl_geo.process_env` set its defaults (GDAL cache and
    OpenMP's passive wait policy); older ones (the ``ref`` case at b845855) set only
    GDAL's two variables in ``cli/main.py``, which is what is set for them here.
    """
    import semimtl_geo

    # Looked up in the imported package's own folder: the editable install's finder
    # would otherwise supply this checkout's module to the ref's package.
    if not (Path(semimtl_geo.__file__).parent / "process_env.py").is_file():
        os.environ.setdefault("GDAL_DISABLE_READDIR_ON_OPEN", "EMPTY_DIR")
        os.environ.setdefault("GDAL_CACHEMAX", "512")
        return "GDAL_CACHEMAX=512 (no process_env)"
    from semimtl_geo.process_env import set_process_defaults

    set_process_defaults()
    return f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}"


def child(args: argparse.Namespace) -> None:
    env = set_cli_environment() if args.case != "baseline" else "GDAL_CACHEMAX=512"
    if args.case == "baseline":
        os.environ.setdefault("GDAL_CACHEMAX", "512")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    result = run_baseline(args) if args.case == "baseline" else run_ours(args)
    result["peak_rss_mb"] = peak_rss_mb()
    result["env"] = env
    print("RESULT " + json.dumps(result), flush=True)


def ref_worktree(ref: str, workdir: Path) -> tuple[Path, str]:
    """A detached ``git worktree`` of ``ref`` (reused while its commit is unchanged)."""
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", ref], check=True,
                            capture_output=True, text=True).stdout.strip()
    path = workdir / f"ref_{commit[:12]}"
    if not (path / "semimtl_geo").is_dir():
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(path),
                        commit], check=True, capture_output=True)
    return path, commit


def load_average() -> float:
    """One-minute load average (how busy the shared machine was)."""
    return round(os.getloadavg()[0], 2)


def run_case(args: argparse.Namespace, case: str, raster: Path, workdir: Path,
             ref_path: Path | None) -> dict:
    """Run one case in a fresh child process and return its RESULT line."""
    overlap = 0.0 if case == "ours-overlap0" else args.overlap
    cmd = [sys.executable, __file__, "--case", "baseline" if case == "baseline" else "ours",
           "--raster", str(raster), "--model", args.model,
           "--output-stride", str(args.output_stride), "--patch-size", str(args.patch_size),
           "--overlap", str(overlap), "--batch-size", str(args.batch_size),
           "--device", args.device, "--threads", str(args.threads), "--engine", args.engine,
           "--workdir", str(workdir)]
    env = dict(os.environ)
    if case == "ref":
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ref_path),
                                                          env.get("PYTHONPATH")]))
    load = load_average()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not line:
        print(proc.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"case {case} on {raster.name} failed")
    res = json.loads(line[-1][7:])
    if case == "ref" and not res["module"].startswith(str(ref_path)):
        raise SystemExit(f"the ref case imported {res['module']}, not the worktree {ref_path}")
    res["load_before"] = load
    return res


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2048],
                        help="square raster sides in pixels")
    parser.add_argument("--rows", type=int, default=None,
                        help="raster rows (default: square); memory depends on the width")
    parser.add_argument("--model", default="resnet18",
                        help="'tiny' or an smp encoder name for MultiTaskNet")
    parser.add_argument("--output-stride", type=int, default=16)
    parser.add_argument("--patch-size", type=int, default=512)
    parser.add_argument("--overlap", type=float, default=0.5)
    parser.add_argument("--batch-size", type=int, default=4, help="ours/ref windows per call")
    parser.add_argument("--device", default="cpu", help="'cpu', 'cuda', 'cuda:1'")
    parser.add_argument("--engine", default="auto", help="ours: --engine of predict")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--cases", nargs="+", default=["ours", "baseline"],
                        choices=["ours", "ours-overlap0", "ref", "baseline"])
    parser.add_argument("--ref", default=REF_DEFAULT,
                        help="git ref of the 'ref' case (default: main before issue 14)")
    parser.add_argument("--repeats", type=int, default=1, help="rounds of all cases")
    parser.add_argument("--workdir", default=None, help="where rasters go (default: a tmp dir)")
    parser.add_argument("--csv", type=Path, default=RESULTS / "predict_runs.csv",
                        help="rows are appended here")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--raster", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        child(args)
        return
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="semimtl_bench_"))
    workdir.mkdir(parents=True, exist_ok=True)
    ref_path = commit = None
    if "ref" in args.cases:
        ref_path, commit = ref_worktree(args.ref, workdir)
        print(f"ref {args.ref} = {commit} at {ref_path}", flush=True)
    rows = []
    for size in args.sizes:
        rows_px = args.rows or size
        name = f"synthetic_{size}.tif" if rows_px == size else f"synthetic_{size}x{rows_px}.tif"
        raster = make_raster(workdir / name, size, rows_px)
        for rnd in range(args.repeats):
            for case in args.cases:
                res = run_case(args, case, raster, workdir, ref_path)
                row = {"size": size, "rows": rows_px, "round": rnd, "case": case,
                       "model": args.model,
                       "output_stride": args.output_stride if args.model != "tiny" else "",
                       "patch": args.patch_size,
                       "overlap": 0.0 if case == "ours-overlap0" else args.overlap,
                       "device": args.device, "engine": res["engine"],
                       "windows": res["windows"], "seconds": round(res["seconds"], 2),
                       "cpu_seconds": round(res["cpu_seconds"], 2),
                       "mp_per_s": float(f"{size * rows_px / 1e6 / res['seconds']:.4g}"),
                       "peak_rss_mb": round(res["peak_rss_mb"], 1),
                       "load_before": res["load_before"],
                       "ref_commit": commit if case == "ref" else "",
                       "env": res.get("env", ""),
                       "cpu": platform.processor() or platform.machine(),
                       "threads": args.threads or os.cpu_count()}
                rows.append(row)
                print(json.dumps(row), flush=True)
            ours = next(r for r in rows if r["size"] == size and r["round"] == rnd
                        and r["case"] == "ours") if "ours" in args.cases else None
            for r in rows:
                if ours and r["size"] == size and r["round"] == rnd:  # same raster: seconds
                    r["ours_over_this"] = round(r["seconds"] / ours["seconds"], 3)
                    r["ours_over_this_cpu"] = round(r["cpu_seconds"] / ours["cpu_seconds"], 3)
    args.csv.parent.mkdir(parents=True, exist_ok=True)
    fields = ["size", "rows", "round", "case", "model", "output_stride", "patch", "overlap",
              "device", "engine", "windows", "seconds", "cpu_seconds", "mp_per_s", "peak_rss_mb",
              "ours_over_this", "ours_over_this_cpu",
              "load_before", "ref_commit", "cpu", "threads"]
    new = not args.csv.exists()
    if not new and args.csv.read_text().splitlines()[0].split(",") != fields:
        args.csv = args.csv.with_name(args.csv.stem + "_v2.csv")  # older column set
        new = not args.csv.exists()
    with args.csv.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerows(rows)
    print("| size | case | engine | windows | MP/s (median) | peak RSS (MiB) | "
          "ours / case per round (wall) | median | ours / case per round (CPU) | median | "
          "load before |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")

    def median(values: list[float]) -> str:
        return f"{statistics.median(values):.2f}" if values else "nan"

    for size in args.sizes:
        for case in args.cases:
            rs = [r for r in rows if r["size"] == size and r["case"] == case]
            ratios = [r["ours_over_this"] for r in rs if "ours_over_this" in r]
            cpu = [r["ours_over_this_cpu"] for r in rs if "ours_over_this_cpu" in r]
            print(f"| {size} | {case} | {rs[0]['engine']} | {rs[0]['windows']} | "
                  f"{statistics.median(r['mp_per_s'] for r in rs):.4g} | "
                  f"{max(r['peak_rss_mb'] for r in rs):.0f} | "
                  f"{', '.join(f'{x:.2f}' for x in ratios)} | {median(ratios)} | "
                  f"{', '.join(f'{x:.2f}' for x in cpu)} | {median(cpu)} | "
                  f"{', '.join(str(r['load_before']) for r in rs)} |")


if __name__ == "__main__":
    main()
