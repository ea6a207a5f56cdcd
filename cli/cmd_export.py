"""``semimtl-geo export-onnx``: ONNX files for QGIS's Deepness plugin."""

from pathlib import Path

import click


@click.command("export-onnx")
@click.option(
    "--checkpoint", "checkpoint", required=True, type=click.Path(path_type=Path),
    help="Checkpoint written by 'semimtl-geo train', or its run folder (model.pt).",
)
@click.option(
    "-o", "--output", "output", required=True, type=click.Path(path_type=Path),
    help="model.onnx; a two-task model gives model_seg.onnx and model_height.onnx.",
)
@click.option(
    "--tasks", default=None, help="Subset of the model's tasks, e.g. 'seg' (default: all).",
)
@click.option(
    "--tile-size", type=int, default=None,
    help="Square tile size in px the graph takes (default: the checkpoint's patch size).",
)
@click.option("--opset", type=int, default=17, show_default=True, help="ONNX opset version.")
@click.option(
    "--dynamic-batch/--batch-one", default=False, show_default=True,
    help="Dynamic batch dimension (newer Deepness) or batch 1 (every Deepness version).",
)
@click.option(
    "--domain", default=None,
    help="Models trained with model.norm=domain: the training dataset whose normalisation "
         "statistics the graphs bake in, e.g. potsdam (default: the first).",
)
def export_onnx_cmd(
    checkpoint: Path,
    output: Path,
    tasks: str | None,
    tile_size: int | None,
    opset: int,
    dynamic_batch: bool,
    domain: str | None,
) -> None:
    """Export a checkpoint to ONNX for the QGIS Deepness plugin (one file per task).

    Our input normalisation is baked into each graph (Deepness feeds pixels/255), the
    segmentation file outputs softmax probabilities, and the metadata Deepness reads
    (model type, class names, resolution, tile size and overlap, height scaling) is
    embedded. Each file is checked with onnxruntime against PyTorch before it is written.
    """
    from semimtl_geo.export import export_onnx

    for item in export_onnx(
        checkpoint, output, tasks=tasks, tile_size=tile_size, opset=opset,
        dynamic_batch=dynamic_batch, domain=domain,
    ):
        click.echo(
            f"{item.path}: Deepness {item.model_type}, {item.tile_size} px tiles, "
            f"onnxruntime vs PyTorch max abs diff {item.max_abs_diff:.2e}"
        )


COMMANDS = [export_onnx_cmd]
