"""``semimtl-geo train``: train any method of the paper from a YAML config."""

from pathlib import Path

import click

from semimtl_geo.errors import UserError


class MethodChoice(click.Choice):
    """``--method`` choices: the registered methods, read when first needed.

    Reading the registry imports torch, so it is deferred until the option is parsed or
    its help is shown; ``semimtl-geo --help`` and the other commands start without it.
    """

    def __init__(self) -> None:
        super().__init__((), case_sensitive=True)

    @property
    def choices(self) -> tuple[str, ...]:  # type: ignore[override]
        """Every registered method name (:func:`~semimtl_geo.training.methods.method_names`)."""
        from semimtl_geo.training.methods import method_names

        return method_names()

    @choices.setter
    def choices(self, value: object) -> None:
        """Ignore click's assignment: the registry is the source."""


@click.command("train", context_settings={"ignore_unknown_options": False})
@click.option(
    "--config",
    "-c",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="YAML config (e.g. configs/isprs.yaml). Optional with --resume.",
)
@click.option(
    "--output",
    "-o",
    "run_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Run folder (default: runs/<config name>_<method>).",
)
@click.option(
    "--method",
    type=MethodChoice(),
    help="Override the config's method.",
)
@click.option(
    "--mode",
    type=click.Choice(["m1", "m2", "m3"]),
    help="SemiMTL inter-domain mode (eq. 4, 5, 8); default m2.",
)
@click.option(
    "--devices", type=int, help="Devices (GPUs, or CPU processes) per machine; DDP when > 1."
)
@click.option(
    "--num-nodes",
    type=int,
    help="Machines taking part (DDP across them); start the command on each one with "
    "torchrun or SLURM's srun.",
)
@click.option("--accelerator", help="Lightning accelerator: auto, cpu, gpu.")
@click.option("--max-steps", type=int, help="Override trainer.max_steps (iterations).")
@click.option("--seed", type=int, help="Override the random seed.")
@click.option(
    "--resume",
    is_flag=True,
    help="Continue the run in --output from checkpoints/last.ckpt (exactly: "
    "optimiser, schedule, discriminators, data order).",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace the run already in --output (its config.yaml, model.pt, checkpoints/, "
    "logs/ and previews/ are deleted once the new config checks out).",
)
@click.argument("overrides", nargs=-1)
def train_cmd(
    config_path, run_dir, method, mode, devices, num_nodes, accelerator, max_steps, seed, resume,
    overwrite,
    overrides,
):
    """Train a model; OVERRIDES are dotted ``key=value`` pairs, e.g. ``data.batch_size=8``.

    Writes RUN_DIR/config.yaml, checkpoints/last.ckpt, model.pt, logs/ (CSV and
    TensorBoard) and previews/*.png. A folder that already holds a run is refused unless
    --resume or --overwrite is given.
    """
    from semimtl_geo.training.config import load_config, read_yaml_config
    from semimtl_geo.training.engine import train
    from semimtl_geo.training.methods import method_uses_mode

    flags = [
        f"{k}={v}"
        for k, v in (
            ("method", method),
            ("mode", mode),
            ("seed", seed),
            ("trainer.devices", devices),
            ("trainer.num_nodes", num_nodes),
            ("trainer.accelerator", accelerator),
            ("trainer.max_steps", max_steps),
        )
        if v is not None
    ]
    base = None
    if resume:
        if run_dir is None:
            raise UserError(
                "--resume needs the run folder: pass -o RUN_DIR of the run to continue."
            )
        saved = run_dir / "config.yaml"
        if not saved.is_file():
            raise UserError(f"Nothing to resume in '{run_dir}': it has no config.yaml.")
        base = read_yaml_config(saved)
        if config_path is not None:
            click.echo(
                "Note: --resume uses the run's saved config.yaml; --config is ignored.", err=True
            )
        config_path = None
    elif config_path is None:
        raise UserError(
            "Pass --config FILE (e.g. configs/isprs.yaml), or --resume with -o RUN_DIR."
        )
    cfg = load_config(config_path, [*overrides, *flags], base=base)
    if run_dir is None:
        name = config_path.stem if config_path else "run"
        suffix = f"_{cfg.mode}" if method_uses_mode(cfg.method) else ""
        run_dir = Path("runs") / f"{name}_{cfg.method}{suffix}"
    result = train(cfg, run_dir, resume=resume, overwrite=overwrite)
    click.echo(f"Finished: {result.model_path} (Lightning checkpoint {result.checkpoint}).")


COMMANDS = [train_cmd]
