"""Entry point: ``semimtl-geo`` click group.

Each subcommand lives in its own module of this package and is registered below.
User mistakes raise :class:`semimtl_geo.errors.UserError`; :func:`main` prints their one
sentence to stderr and exits with status 1, without a traceback. A write that fails
because of the output location (disk full, read-only, a file in the way) is reported the
same way (:func:`semimtl_geo.outputs.write_error`).
"""

import os
import sys
from collections.abc import Sequence

import click

from semimtl_geo import __version__
from semimtl_geo.errors import UserError
from semimtl_geo.outputs import is_write_error, write_error
from semimtl_geo.process_env import set_process_defaults

# GDAL and OpenMP defaults, set once before torch or rasterio is imported anywhere (the
# imports above load neither). A bad value the user exported ends in one sentence.
try:
    set_process_defaults()
except UserError as _exc:
    click.echo(f"Error: {_exc}", err=True)
    sys.exit(1)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="semimtl-geo")
def cli() -> None:
    """SemiMTL for geospatial data: one model for segmentation and height across datasets."""


def _register() -> None:
    """Attach every subcommand module that exists (import errors are real errors)."""
    import importlib
    import pkgutil

    package = importlib.import_module("semimtl_geo.cli")
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if not info.name.startswith("cmd_"):
            continue
        module = importlib.import_module(f"semimtl_geo.cli.{info.name}")
        for command in getattr(module, "COMMANDS", ()):
            cli.add_command(command)


_register()


def main(args: Sequence[str] | None = None) -> int:
    """Run the CLI in-process; returns the exit status (used by tests and the console script)."""
    # A VRT can embed Python pixel functions that GDAL runs when it is read; input rasters
    # are data, so that is switched off whatever the environment says (GDAL reads the
    # variable at every open).
    os.environ["GDAL_VRT_ENABLE_PYTHON"] = "NO"
    try:
        rv = cli.main(args=list(args) if args is not None else None, standalone_mode=False)
    except UserError as exc:
        click.echo(f"Error: {exc}", err=True)
        return 1
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except OSError as exc:
        if not is_write_error(exc):
            raise
        click.echo(f"Error: {write_error(exc.filename or '?', exc)}", err=True)
        return 1
    return rv if isinstance(rv, int) else 0


if __name__ == "__main__":
    sys.exit(main())
