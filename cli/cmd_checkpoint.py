"""``semimtl-geo convert-checkpoint``: rewrite a trusted pickled checkpoint in the safe format."""

from pathlib import Path

import click


@click.command("convert-checkpoint")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option(
    "-o", "--output", "output", required=True, type=click.Path(dir_okay=False, path_type=Path),
    help="Converted checkpoint; may be CHECKPOINT itself with --overwrite (replaced atomically).",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing output file.")
@click.option(
    "--unrestricted", is_flag=True,
    help="Also unpickle Python objects other than tensors and plain data: this runs any "
    "code the file holds; only for files you trust.",
)
def convert_checkpoint_cmd(
    checkpoint: Path, output: Path, overwrite: bool, unrestricted: bool
) -> None:
    """Convert a checkpoint of an earlier semimtl-geo (pickled torch file) to the safe format.

    ONLY RUN THIS ON FILES FROM A SOURCE YOU TRUST: the old format is a Python pickle, and
    a pickle can run code. Every other command opens only the safe format (safetensors
    tensors + JSON), which holds no code. Training state is kept, so a converted
    last.ckpt still resumes.
    """
    from semimtl_geo.checkpoint_convert import TRUST_WARNING, convert_checkpoint

    click.echo(TRUST_WARNING, err=True)
    result = convert_checkpoint(checkpoint, output, overwrite=overwrite, unrestricted=unrestricted)
    state = ", training state kept for --resume" if result.training_state else ""
    click.echo(f"Converted '{checkpoint}' -> '{result.path}' ({result.tensors} tensors{state}).")


COMMANDS = [convert_checkpoint_cmd]
