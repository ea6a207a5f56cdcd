"""``semimtl-geo synthesize-streetview``: tiny Cityscapes/Synscapes trees for trying things."""

from pathlib import Path

import click

from semimtl_geo.errors import UserError


def _parse_size(text: str) -> tuple[int, int]:
    try:
        rows, cols = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UserError(f"--size '{text}' is not ROWSxCOLS (e.g. 64x128).") from None
    if rows < 16 or cols < 16:
        raise UserError(f"--size {text} is too small; use at least 16x16.")
    return rows, cols


@click.command("synthesize-streetview")
@click.option(
    "-o", "--output", "output", required=True, type=click.Path(path_type=Path),
    help="Folder that receives cityscapes/ and synscapes/.",
)
@click.option("--size", default="64x128", show_default=True, help="Frame size ROWSxCOLS.")
@click.option(
    "--frames-per-city", type=click.IntRange(1), default=2, show_default=True,
    help="Cityscapes frames per city folder.",
)
@click.option(
    "--synscapes-frames", type=click.IntRange(3), default=25, show_default=True,
    help="Synscapes frames (25 gives the paper's 20/1/4 split ratio).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@click.option("--overwrite", is_flag=True, help="Replace existing cityscapes/ and synscapes/.")
def synthesize_streetview_cmd(
    output: Path, size: str, frames_per_city: int, synscapes_frames: int, seed: int,
    overwrite: bool,
) -> None:
    """Write tiny synthetic Cityscapes and Synscapes datasets with the real layouts.

    Cityscapes gets leftImg8bit/gtFine/disparity/camera folders for train, val, test and
    train_extra (no gtFine); Synscapes gets img/rgb, img/class, img/depth and meta. Point
    configs/cityscapes_*.yaml at them to try the street-view settings in minutes.
    """
    from semimtl_geo.data.streetview.fixtures import write_streetview_fixtures

    paths = write_streetview_fixtures(
        output, size=_parse_size(size), frames_per_city=frames_per_city,
        synscapes_frames=synscapes_frames, seed=seed, overwrite=overwrite,
    )
    for name, path in paths.items():
        click.echo(f"{name}: {path}")


COMMANDS = [synthesize_streetview_cmd]
