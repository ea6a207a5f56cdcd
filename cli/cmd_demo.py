"""``semimtl-geo demo``: the whole pipeline on embedded synthetic data, end to end.

Synthesize Potsdam- and Vaihingen-style archives, prepare them, train SemiMTL (M2) and
the JTL baseline at CPU scale, evaluate both in the paper's Table 2 layout, predict a
held-out georeferenced tile (class + height GeoTIFFs with QGIS styles), and draw one PNG
panel per dataset. Every step runs the same command a user would type, in-process.
"""

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import click
import numpy as np
import yaml

from semimtl_geo.atomic import atomic_write_json, atomic_write_text
from semimtl_geo.errors import UserError

#: Sizes, run lengths and the CPU recipe: the default finishes in minutes on 2 CPU cores;
#: ``--quick`` is for the test suite (seconds, results meaningless). Where the recipe departs from
#: the paper's (configs/isprs.yaml) a few hundred CPU iterations from a random initialisation need
#: it: AdamW instead of SGD, ResNet18 at output stride 32, BatchNorm statistics per dataset, a
#: segmentation head with a 1/4-resolution skip (``seg_skip``), discriminators of half the paper's
#: width (``discriminator_width``: about a fifth of their CPU time), a height head of half the width
#: (``height_channels``: about 28 % less CPU per generator step), a PSP fusion of 128 channels
#: instead of 512 (``seg_channels``: about 12 % less CPU per iteration with the 1/4 skip decoder
#: behind it), no per-term gradient diagnostics (the method study keeps them), precise BatchNorm
#: (``precise_bn_batches``: the running statistics re-estimated per dataset with the final weights
#: from 50 training batches; Wu & Johnson 2021) and a class-balanced cross-entropy
#: (``class_weight_power``: median-frequency weights of the labelled training tiles to this power,
#: :func:`demo_class_weights`). The tiles cover 72 x 72 m (Potsdam, 1440 px at 5 cm) and 76 x 76 m
#: (Vaihingen, 840 px at 9 cm) and are prepared at 24 cm, so a 96 px crop spans 23 m and holds whole
#: roofs and their surroundings (README, "The two commands", and docs/demo_levers_history.md have
#: what each lever measured). Both methods get exactly this budget.
PROFILES = {
    "default": {"size_potsdam": 1440, "size_vaihingen": 840, "tiles": 8, "gsd": 0.24,
                "steps": 600, "crop": 96, "batch": 4, "patch": 256, "output_stride": 32,
                "optimizer": "adamw", "lr": 0.001, "scale_range": [0.5, 2.0], "log_every": 25,
                "norm": "domain", "seg_skip": True, "grad_diagnostics": False,
                "discriminator_width": 32, "height_channels": 128, "seg_channels": 128,
                "precise_bn_batches": 50, "class_weight_power": 0.5},
    "quick": {"size_potsdam": 200, "size_vaihingen": 130, "tiles": 2, "gsd": 0.09,
              "steps": 2, "crop": 64, "batch": 1, "patch": 64, "output_stride": 32,
              "optimizer": "adamw", "lr": 0.001, "scale_range": None, "log_every": 1,
              "norm": "domain", "seg_skip": True, "grad_diagnostics": True,
              "discriminator_width": 32, "height_channels": 128, "seg_channels": 512,
              "precise_bn_batches": 2, "class_weight_power": 0.5},
}


def demo_class_weights(prepared: Path, profile: dict) -> list[float] | None:
    """Return the demo's ``loss.seg_class_weights`` (None when the profile has none).

    Median-frequency balancing of the labelled dataset's (Potsdam's) training tiles, to
    the power ``profile["class_weight_power"]``
    (:mod:`semimtl_geo.data.isprs.class_balance`).
    """
    power = profile.get("class_weight_power")
    if power is None:
        return None
    from semimtl_geo.data.isprs import CLASSES
    from semimtl_geo.data.isprs.class_balance import class_pixel_counts, median_frequency_weights

    return median_frequency_weights(
        class_pixel_counts(prepared, "potsdam", len(CLASSES)), power=float(power))


def demo_config(
    prepared: Path,
    profile: dict,
    device: str,
    seed: int,
    threads: int | None,
    class_weights: list[float] | None = None,
) -> dict:
    """Return the demo's training config: the paper's setting at CPU scale (resnet18).

    ``class_weights`` (:func:`demo_class_weights`, computed once from the prepared tiles)
    become ``loss.seg_class_weights``; ``None`` keeps the plain cross-entropy.
    """
    steps = int(profile["steps"])
    return {
        "method": "semimtl",
        "mode": "m2",
        "seed": seed,
        "model": {"encoder": "resnet18", "encoder_weights": None,
                  "output_stride": profile["output_stride"], "norm": profile["norm"],
                  "seg_skip": bool(profile["seg_skip"]),
                  "discriminator_width": int(profile["discriminator_width"]),
                  "height_channels": int(profile["height_channels"]),
                  "seg_channels": int(profile["seg_channels"])},
        "data": {
            "datasets": [
                {"name": "potsdam", "kind": "isprs", "root": str(prepared), "tasks": ["seg"]},
                {"name": "vaihingen", "kind": "isprs", "root": str(prepared),
                 "tasks": ["height"]},
            ],
            "crop_size": profile["crop"],
            "batch_size": profile["batch"],
            "num_workers": 0,
            "scale_range": profile["scale_range"],
        },
        "optim": {"optimizer": profile["optimizer"], "lr": profile["lr"]},
        **({"loss": {"seg_class_weights": class_weights}} if class_weights is not None else {}),
        "trainer": {
            "max_steps": steps,
            "steps_per_epoch": max(1, steps // 2),
            "accelerator": "gpu" if device == "cuda" else ("cpu" if device == "cpu" else "auto"),
            "log_every": max(1, min(int(profile["log_every"]), steps)),
            "grad_diagnostics": bool(profile["grad_diagnostics"]),
            "preview_every": max(1, steps // 2),
            "precise_bn_batches": int(profile["precise_bn_batches"]),
            "cpu_threads": threads,
        },
        "eval": {"patch_size": profile["patch"], "overlap": 0.5, "batch_size": 4},
    }


#: What the demo writes in its folder (``--overwrite`` deletes exactly these).
DEMO_ENTRIES = ("raw", "prepared", "runs", "report.md", "report.json", "predict", "demo.yaml",
                "timings.json", "summary.json", "panel_potsdam.png", "panel_vaihingen.png",
                "train_jtl.log")

#: What the demo's summary shows per method: (dataset, task, key, label, labelled?).
SUMMARY = (
    ("potsdam", "seg", "mIoU", "Potsdam mIoU", True),
    ("potsdam", "seg", "building", "Potsdam building IoU", True),
    ("vaihingen", "height", "RMSE", "Vaihingen height RMSE (m)", True),
    ("vaihingen", "seg", "mIoU", "Vaihingen mIoU", False),
    ("potsdam", "height", "r", "Potsdam height r", False),
)


def summarise(report: dict) -> dict[str, dict[str, float | None]]:
    """Headline figures per method from an ``evaluate`` report (``SUMMARY``'s keys).

    ``building`` is the building class's IoU; ``r`` is Pearson's correlation of predicted
    and reference height (:class:`semimtl_geo.metrics.HeightMetrics`).
    """
    out: dict[str, dict[str, float | None]] = {}
    for row in report["rows"]:
        figures: dict[str, float | None] = {}
        for dataset, task, key, label, _ in SUMMARY:
            values = (row["datasets"].get(dataset) or {}).get(task) or {}
            if key == "building":
                ious = values.get("IoU") or []
                figures[label] = ious[1] if len(ious) > 1 else None
            else:
                figures[label] = values.get(key)
        out[row["method"]] = figures
    return out


def clear_demo(out: Path) -> None:
    """Delete an earlier demo's files and folders from ``out``; anything else stays."""
    for name in DEMO_ENTRIES:
        target = out / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()


def _run(step: int, total: int, title: str, argv: list[str]) -> float:
    from semimtl_geo.cli.main import main

    click.secho(f"\n[{step}/{total}] {title}", bold=True)
    click.echo("  $ semimtl-geo " + " ".join(argv))
    start = time.perf_counter()
    status = main(argv)
    if status != 0:
        raise UserError(f"Demo step '{title}' failed (exit {status}); see the message above.")
    return time.perf_counter() - start


def _usable_cpus() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _train_side_by_side(
    config: Path, runs: Path, log: Path, threads: int, steps: int
) -> dict[str, float]:
    """Train SemiMTL in this process and JTL in a child process at the same time.

    On a CPU the demo's small convolutions use a second thread poorly (a JTL iteration at
    96 px runs about 1.3x faster on 2 threads than on 1), so two trainings on one core
    each finish sooner than one after the other on both. JTL's output goes to ``log``;
    SemiMTL shows its progress bar. A failure of either stops the other.
    """
    argv = ["train", "-c", str(config), "-o", str(runs / "jtl"), "--method", "jtl",
            f"trainer.cpu_threads={threads}", "trainer.progress_bar=false"]
    click.secho(f"\n[3/7] Train jtl ({steps} steps) in the background, side by side with "
                f"semimtl ({threads} CPU thread(s) each)", bold=True)
    click.echo("  $ semimtl-geo " + " ".join(argv) + f"   (in the background, log: {log})")
    start = time.perf_counter()
    with open(log, "w") as out:
        child = subprocess.Popen(
            [sys.executable, "-m", "semimtl_geo.cli.main", *argv],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
    ended: list[float] = []  # when the child exits, seen by a watcher thread
    watcher = threading.Thread(target=lambda: (child.wait(), ended.append(time.perf_counter())),
                               daemon=True)
    watcher.start()
    timings: dict[str, float] = {}
    try:
        timings["train semimtl"] = _run(4, 7, f"Train semimtl ({steps} steps)", [
            "train", "-c", str(config), "-o", str(runs / "semimtl"), "--method", "semimtl",
            f"trainer.cpu_threads={threads}",
        ])
        if child.poll() is None:
            click.echo(f"  waiting for the jtl training (log: {log}) ...")
        status = child.wait()
        watcher.join()
        timings["train jtl"] = ended[0] - start
    finally:
        if child.poll() is None:
            child.terminate()
            child.wait()
    if status != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
        raise UserError(f"Demo step 'Train jtl' failed (exit {status}): {tail[0]} (log: {log}).")
    return timings


def _panels(out: Path, checkpoint: Path, prepared: Path, device: str, patch: int) -> list[Path]:
    """One PNG per dataset: its first test tile's input, references and predictions."""
    from semimtl_geo.checkpoint import load_model_checkpoint
    from semimtl_geo.data import list_isprs_tiles, read_isprs_tile
    from semimtl_geo.inference import predict_array
    from semimtl_geo.training.preview import PreviewRow, save_preview

    loaded = load_model_checkpoint(checkpoint)
    paths = []
    for dataset in ("potsdam", "vaihingen"):
        tile = read_isprs_tile(list_isprs_tiles(prepared, dataset, "test")[0])
        loaded.model.select_domain(dataset)  # its own normalisation statistics
        pred = predict_array(loaded, tile.image, patch_size=patch, overlap=0.5, device=device)
        row = PreviewRow(
            name=f"{dataset} {tile.tile_id}",
            image=tile.image.astype(np.float32) / 255.0,
            mask=tile.mask,
            pred_class=pred.get("class"),
            height=None if tile.height is None else tile.height * tile.record.height_scale,
            pred_height=pred.get("height"),
        )
        title = f"{dataset} test tile {tile.tile_id}: SemiMTL (M2) after the demo's training"
        paths.append(save_preview(out / f"panel_{dataset}.png", [row], loaded.meta.classes,
                                  title=title))
    return paths


@click.command("demo")
@click.option("-o", "--output", "out", type=click.Path(file_okay=False, path_type=Path),
              default=Path("runs/demo"), show_default=True, help="Folder for everything.")
@click.option("--steps", type=click.IntRange(min=1), default=None,
              help=f"Training iterations per method (default {PROFILES['default']['steps']}; "
                   f"{PROFILES['quick']['steps']} with --quick).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
              show_default=True, help="auto uses the GPU when one is present.")
@click.option("--quick", is_flag=True, help="Tiny sizes and 2 steps: checks the plumbing only.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="CPU threads per training (default: half the cores each when the two "
                   "trainings run side by side on a CPU, else torch's).")
@click.option("--overwrite", is_flag=True,
              help="Replace an earlier demo in the output folder (only the demo's own files "
                   "and folders are deleted).")
def demo_cmd(out: Path, steps: int | None, device: str, quick: bool, seed: int,
             threads: int | None, overwrite: bool) -> None:
    """Run the whole pipeline on synthetic ISPRS-style data and print a summary."""
    from semimtl_geo.inference.predictor import resolve_device
    from semimtl_geo.outputs import check_output_dir

    check_output_dir(out)
    device = resolve_device(device).type  # a missing GPU fails now, not at step 3
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise UserError(f"'{out}' is not empty; pass --overwrite or choose another -o folder.")
        clear_demo(out)
    out.mkdir(parents=True, exist_ok=True)
    profile = dict(PROFILES["quick" if quick else "default"])
    if steps is not None:
        profile["steps"] = steps
    raw, prepared, runs = out / "raw", out / "prepared", out / "runs"
    timings: dict[str, float] = {}
    demo_start = time.perf_counter()
    total = 7
    timings["synthesize"] = _run(1, total, "Synthesize Potsdam/Vaihingen-style archives", [
        "synthesize-isprs", "-o", str(raw), "--seed", str(seed),
        "--size-potsdam", str(profile["size_potsdam"]),
        "--size-vaihingen", str(profile["size_vaihingen"]),
        "--tiles-potsdam", str(profile["tiles"]), "--tiles-vaihingen", str(profile["tiles"]),
    ])
    gsd = float(profile["gsd"])
    timings["prepare"] = _run(2, total, f"Prepare {gsd * 100:g} cm georeferenced tiles", [
        "prepare-isprs", "--potsdam", str(raw / "potsdam"), "--vaihingen",
        str(raw / "vaihingen"), "-o", str(prepared), "--gsd", str(gsd),
    ])
    config_path = out / "demo.yaml"
    atomic_write_text(config_path, yaml.safe_dump(
        demo_config(prepared, profile, device, seed, threads,
                    demo_class_weights(prepared, profile)), sort_keys=False))
    cpus = _usable_cpus()
    side_by_side = device == "cpu" and cpus >= 2
    if side_by_side:
        timings.update(_train_side_by_side(
            config_path, runs, out / "train_jtl.log", threads or cpus // 2, profile["steps"]))
    else:
        for i, method in ((3, "semimtl"), (4, "jtl")):
            timings[f"train {method}"] = _run(
                i, total, f"Train {method} ({profile['steps']} steps)",
                ["train", "-c", str(config_path), "-o", str(runs / method), "--method", method],
            )
    report = out / "report"
    timings["evaluate"] = _run(5, total, "Evaluate on the full test tiles (Table 2 layout)", [
        "evaluate", "-c", str(runs / "semimtl" / "model.pt"), "-c", str(runs / "jtl" / "model.pt"),
        "-o", str(report), "--device", device,
        "--patch-size", str(profile["patch"]), "--overlap", "0.5",
    ])
    from semimtl_geo.data import list_isprs_tiles

    held_out = list_isprs_tiles(prepared, "potsdam", "test")[0].image_path
    timings["predict"] = _run(6, total, "Predict a held-out georeferenced tile", [
        "predict", str(held_out), "-o", str(out / "predict"), "--checkpoint",
        str(runs / "semimtl" / "model.pt"), "--device", device, "--vectorize",
        "--patch-size", str(profile["patch"]), "--domain", "potsdam",
    ])
    click.secho(f"\n[7/{total}] Draw the panels (input, reference, prediction, height)", bold=True)
    start = time.perf_counter()
    panels = _panels(out, runs / "semimtl" / "model.pt", prepared, device, profile["patch"])
    timings["panels"] = time.perf_counter() - start
    atomic_write_json(out / "timings.json", timings)
    summary = summarise(json.loads(report.with_suffix(".json").read_text()))
    atomic_write_json(out / "summary.json", summary)

    click.secho("\nDemo finished.", bold=True, fg="green")
    click.echo(f"  prepared tiles   {prepared}  (manifest.json)")
    click.echo(f"  checkpoints      {runs / 'semimtl' / 'model.pt'}, {runs / 'jtl' / 'model.pt'}")
    click.echo(f"  training logs    {runs / 'semimtl' / 'logs'}  (CSV + TensorBoard, previews/)")
    click.echo(f"  report           {report}.md, {report}.json")
    click.echo(f"  predictions      {out / 'predict'}  (GeoTIFF + QML: drag into QGIS)")
    for p in panels:
        click.echo(f"  panel            {p}")
    click.echo("\nHeld-out test tiles (labelled tasks, then the tasks without training labels):")
    for method, figures in summary.items():
        shown = ", ".join(
            f"{label}{'' if labelled else ' [unlabelled]'} "
            + ("n/a" if figures[label] is None else f"{figures[label]:.2f}")
            for _, _, _, label, labelled in SUMMARY
        )
        click.echo(f"  {method:<14} {shown}")
    click.echo("  seconds per step " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
    click.echo(f"  total            {time.perf_counter() - demo_start:.0f} s on {device}"
               + (" (the two trainings ran side by side)" if side_by_side else ""))


COMMANDS = [demo_cmd]
