"""``semimtl-geo evaluate``: full-tile metrics in the layout of the paper's Table 2."""

import math
from pathlib import Path

import click

from semimtl_geo.errors import UserError


@click.command("evaluate")
@click.option(
    "--checkpoint",
    "-c",
    "checkpoints",
    multiple=True,
    required=True,
    type=click.Path(path_type=Path),
    help="Checkpoint (.pt/.ckpt) or run folder; repeat for several table rows.",
)
@click.option(
    "--baseline-seg",
    type=click.Path(path_type=Path),
    help="STL segmentation checkpoint: ΔM reference for mIoU.",
)
@click.option(
    "--baseline-height",
    type=click.Path(path_type=Path),
    help="STL height checkpoint: ΔM reference for RMSE.",
)
@click.option(
    "--output",
    "-o",
    "out",
    required=True,
    type=click.Path(path_type=Path),
    help="Report path; writes REPORT.md and REPORT.json.",
)
@click.option(
    "--split", help="Dataset split to evaluate (default: the checkpoint config's eval.split)."
)
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N, auto.")
@click.option("--patch-size", type=click.IntRange(min=8),
              help="Window size (default: the checkpoint's).")
@click.option("--overlap", type=click.FloatRange(0.0, 1.0, max_open=True),
              help="Window overlap fraction (default: the checkpoint's).")
@click.option("--batch-size", type=click.IntRange(min=1), default=4, show_default=True,
              help="Windows per forward.")
@click.option("--max-tiles", type=click.IntRange(min=1),
              help="Evaluate at most N tiles per dataset (quick checks).")
@click.option(
    "--min-height",
    type=float,
    help="Threshold (metres) of the extra robust table: AbsRel and δ over references above "
    "it; the main table uses every reference > 0 as the paper does "
    "(default: the checkpoint config's eval.min_height).",
)
@click.option(
    "--root",
    "roots",
    multiple=True,
    help="NAME=PATH: read dataset NAME from PATH instead of the training config's root.",
)
def evaluate_cmd(
    checkpoints,
    baseline_seg,
    baseline_height,
    out,
    split,
    device,
    patch_size,
    overlap,
    batch_size,
    max_tiles,
    min_height,
    roots,
):
    """Evaluate checkpoints on the full test tiles of every dataset (sliding windows)."""
    from semimtl_geo.checkpoint import load_model_checkpoint
    from semimtl_geo.inference.predictor import resolve_device
    from semimtl_geo.training.evaluate import (
        check_report_path,
        default_predict,
        evaluate_checkpoints,
        write_report,
    )

    check_report_path(out)  # before the evaluation, not after it
    if min_height is not None and not math.isfinite(min_height):
        raise UserError(f"--min-height must be a number of metres, got {min_height}.")
    root_map = {}
    for item in roots:
        if "=" not in item:
            raise UserError(f"--root '{item}' is not of the form NAME=PATH.")
        name, path = item.split("=", 1)
        root_map[name] = path
    device = str(resolve_device(device))  # an unknown device fails now, not after loading
    models = [load_model_checkpoint(p) for p in checkpoints]
    bseg = load_model_checkpoint(baseline_seg) if baseline_seg else None
    bheight = load_model_checkpoint(baseline_height) if baseline_height else None
    for name, loaded in (("--baseline-seg", bseg), ("--baseline-height", bheight)):
        task = "seg" if name.endswith("seg") else "height"
        if loaded is not None and task not in loaded.model.tasks:
            raise UserError(
                f"{name} '{loaded.path}' has no {task} head; pass an STL {task} checkpoint."
            )
    eval_cfg = (models[0].config or {}).get("eval", {})
    split = split or eval_cfg.get("split", "test")
    min_height = min_height if min_height is not None else float(eval_cfg.get("min_height", 0.0))
    report = evaluate_checkpoints(
        models,
        default_predict(patch_size, overlap, batch_size, device),
        bseg,
        bheight,
        split=split,
        max_samples=max_tiles,
        min_height=min_height,
        roots=root_map,
    )
    md, js = write_report(report, out)
    click.echo(md.read_text())
    click.echo(f"Wrote {md} and {js}.")


COMMANDS = [evaluate_cmd]
