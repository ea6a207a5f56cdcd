"""Train SemiMTL from Python: synthesize, prepare, configure and train without the CLI.

What it shows:

1. :func:`semimtl_geo.data.isprs.synthesize.synthesize_isprs` writes small Potsdam- and
   Vaihingen-style archives (the real ISPRS file names and formats, synthetic scenes);
2. :func:`semimtl_geo.data.isprs.prepare.prepare_isprs` with :class:`PrepareOptions` turns them
   into aligned, georeferenced 9 cm GeoTIFF tiles plus ``manifest.json`` (with the real
   downloads, point it at the folders holding the ISPRS zips instead);
3. a :class:`~semimtl_geo.training.config.TrainConfig` is built from a plain ``dict`` with
   :func:`~semimtl_geo.training.config.load_config` (dataclass defaults <- ``base`` dict <-
   optional YAML <- dotted overrides), validated key by key;
4. :func:`semimtl_geo.training.engine.train` runs Algorithm 1 of the paper (Potsdam gives
   the segmentation labels, Vaihingen the height labels, SemiMTL M2 discriminators) and
   writes ``model.pt``, ``config.yaml``, ``checkpoints/last.ckpt`` and ``logs/``.

Run it (20 steps of resnet18: 174 s and 1.4 GB peak memory measured on 2 CPU cores
shared with other jobs; results are meaningless at this length, raise ``--steps``,
``--tiles`` and the sizes for a real run, and pass ``--device gpu`` on a GPU)::

    .venv/bin/python examples/train_from_python.py -o runs/example

Tiny plumbing check (seconds)::

    .venv/bin/python examples/train_from_python.py -o /tmp/ex --size-potsdam 200 \\
        --size-vaihingen 130 --tiles 2 --steps 2 --crop 64 --batch 1

The last line printed is the path of ``model.pt``; feed it to ``predict_folder.py``.
"""

import argparse
import shutil
import sys
from pathlib import Path

from semimtl_geo.data.isprs.prepare import PrepareOptions, prepare_isprs
from semimtl_geo.data.isprs.synthesize import synthesize_isprs
from semimtl_geo.errors import UserError
from semimtl_geo.training.config import load_config
from semimtl_geo.training.engine import train
from semimtl_geo.training.methods import method_names


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line flags: output folder, data sizes and run length."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("-o", "--output", type=Path, default=Path("runs/example"),
                   help="folder for raw/, prepared/ and run/")
    p.add_argument("--size-potsdam", type=int, default=300, help="Potsdam tile side (5 cm px)")
    p.add_argument("--size-vaihingen", type=int, default=180,
                   help="Vaihingen area side (9 cm px)")
    p.add_argument("--tiles", type=int, default=2,
                   help="tiles per dataset (alternating official train/test ids)")
    p.add_argument("--steps", type=int, default=20, help="training iterations")
    p.add_argument("--crop", type=int, default=64, help="training crop size (px)")
    p.add_argument("--batch", type=int, default=2, help="mini-batch size per dataset")
    p.add_argument("--encoder", default="resnet18", help="smp encoder name")
    p.add_argument("--output-stride", type=int, default=8, choices=[8, 16, 32],
                   help="encoder output stride (8 = the paper's dilated network; 32 is "
                        "faster on a CPU)")
    p.add_argument("--method", default="semimtl", choices=method_names())
    p.add_argument("--mode", default="m2", choices=["m1", "m2", "m3"],
                   help="SemiMTL inter-domain loss (eq. 4, 5 or 8)")
    p.add_argument("--patch", type=int, default=128,
                   help="sliding-window size stored in the checkpoint for inference")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "gpu"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="delete the output folder first")
    return p.parse_args(argv)


def build_config(prepared: Path, args: argparse.Namespace):  # noqa: ANN201 - TrainConfig
    """The training configuration as plain Python data, validated by ``load_config``.

    Only the keys that differ from the defaults (the paper's hyper-parameters, section
    4.1) are given; an unknown key or a wrong type raises ``UserError`` naming it.
    """
    base = {
        "method": args.method,
        "mode": args.mode,
        "seed": args.seed,
        # ImageNet weights need the internet; None trains from scratch.
        "model": {"encoder": args.encoder, "encoder_weights": None,
                  "output_stride": args.output_stride},
        "data": {
            # Domain order matters: discriminator class k = position in this list.
            "datasets": [
                {"name": "potsdam", "kind": "isprs", "root": str(prepared), "tasks": ["seg"]},
                {"name": "vaihingen", "kind": "isprs", "root": str(prepared),
                 "tasks": ["height"]},
            ],
            "crop_size": args.crop,
            "batch_size": args.batch,
            "num_workers": 0,
        },
        "trainer": {
            "max_steps": args.steps,
            "steps_per_epoch": args.steps,
            "accelerator": args.device,
            "log_every": max(1, min(10, args.steps)),
            "preview_every": 0,
        },
        "eval": {"patch_size": args.patch, "overlap": 0.5},
    }
    return load_config(base=base)


def main(argv: list[str] | None = None) -> Path:
    """Run the four steps; return the path of the trained ``model.pt``.

    Raises:
        UserError: a non-empty output folder without ``--overwrite``, a bad setting.

    """
    args = parse_args(argv)
    out: Path = args.output
    if out.exists() and any(out.iterdir()):
        if not args.overwrite:
            raise UserError(f"'{out}' is not empty; pass --overwrite or choose another -o folder.")
        shutil.rmtree(out)
    raw, prepared, run_dir = out / "raw", out / "prepared", out / "run"
    cfg = build_config(prepared, args)  # validate the settings before any work

    written = synthesize_isprs(raw, size_potsdam=args.size_potsdam,
                               size_vaihingen=args.size_vaihingen, tiles_potsdam=args.tiles,
                               tiles_vaihingen=args.tiles, seed=args.seed)
    print("synthesized tiles:", written)

    report = prepare_isprs(raw / "potsdam", raw / "vaihingen", prepared,
                           PrepareOptions(overwrite=args.overwrite, progress=False,
                                          patch_size=args.patch))
    if report.failed:
        for r in report.failed:
            print(f"tile {r.dataset}/{r.tile} failed: {r.error}")
        raise SystemExit(1)
    print(f"prepared {len(report.results)} tiles -> {report.manifest_path}")

    result = train(cfg, run_dir)
    print(f"run folder: {result.run_dir} (config.yaml, logs/, checkpoints/last.ckpt)")
    print(f"model: {result.model_path}")
    return result.model_path


if __name__ == "__main__":
    try:
        main()
    except UserError as exc:  # a problem the user can fix: print it without a traceback
        print(f"Error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
