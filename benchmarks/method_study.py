"""Small reproducible study: every method of Table 2 on synthesized ISPRS data, on CPU.

Steps (all seeded):
1. ``synthesize-isprs`` small Potsdam/Vaihingen-style archives and ``prepare-isprs`` them;
2. train every method (STL Seg/Depth, DA Seg/Depth, JTL, SemiSD, SemiMTL M1/M2/M3) from
   ``configs/isprs.yaml`` at CPU scale (ResNet18, random init, small crops);
3. evaluate every run on the full test tiles of both datasets with sliding windows and
   write one Table-2-shaped report (ΔM against the STL runs), plus the mean loss terms of
   the last iterations of every run (to compare supervised and adversarial scales).

Usage::

    python benchmarks/method_study.py -o benchmarks/results/method_study --steps 150

``--set key=value`` (repeatable) overrides the training config of every run, e.g.
``--set loss.lambda_inter=0.001``.
"""

import argparse
import csv
import json
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
METHODS = [
    ("stl_seg", "m2"),
    ("stl_height", "m2"),
    ("da_seg", "m2"),
    ("da_height", "m2"),
    ("jtl", "m2"),
    ("semisd", "m2"),
    ("semimtl", "m1"),
    ("semimtl", "m2"),
    ("semimtl", "m3"),
]


def run_name(method: str, mode: str) -> str:
    return f"{method}_{mode}" if method == "semimtl" else method


def prepare(out: Path, seed: int, tiles: int) -> Path:
    from semimtl_geo.cli.main import main

    raw, prepared = out / "raw", out / "prepared"
    if not (prepared / "manifest.json").is_file():
        assert (
            main(
                [
                    "synthesize-isprs",
                    "-o",
                    str(raw),
                    "--seed",
                    str(seed),
                    "--tiles-potsdam",
                    str(tiles),
                    "--tiles-vaihingen",
                    str(tiles),
                    "--size-potsdam",
                    "900",
                    "--size-vaihingen",
                    "500",
                ]
            )
            == 0
        )
        assert (
            main(
                [
                    "prepare-isprs",
                    "--potsdam",
                    str(raw / "potsdam"),
                    "--vaihingen",
                    str(raw / "vaihingen"),
                    "-o",
                    str(prepared),
                ]
            )
            == 0
        )
    return prepared


def overrides_for(args, prepared: Path, method: str, mode: str) -> list[str]:
    return [
        f"method={method}",
        f"mode={mode}",
        f"seed={args.seed}",
        f"data.datasets.0.root={prepared}",
        f"data.datasets.1.root={prepared}",
        "model.encoder=resnet18",
        "model.encoder_weights=null",
        "model.output_stride=16",
        f"data.crop_size={args.crop}",
        f"data.batch_size={args.batch}",
        "data.num_workers=0",
        f"trainer.max_steps={args.steps}",
        f"trainer.steps_per_epoch={args.steps}",
        f"trainer.preview_every={args.steps}",
        "trainer.progress_bar=false",
        "trainer.log_every=5",
        "trainer.cpu_threads=1",
        "trainer.accelerator=cpu",
        f"eval.patch_size={args.patch}",
        "eval.batch_size=4",
        *args.overrides,
    ]


def train_one(job: tuple) -> tuple[str, float, object, float]:
    args, prepared, method, mode = job
    import logging
    import warnings

    import torch

    from semimtl_geo.training.config import load_config
    from semimtl_geo.training.engine import train

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    from semimtl_geo.checkpoint import load_model_checkpoint
    from semimtl_geo.training.evaluate import datasets_of, default_predict, evaluate_model

    name = run_name(method, mode)
    run_dir = Path(args.work) / "runs" / name
    seconds = float("nan")
    if not (run_dir / "model.pt").is_file():
        cfg = load_config(
            REPO / "configs" / "isprs.yaml", overrides_for(args, prepared, method, mode)
        )
        start = time.perf_counter()
        with open(Path(args.work) / f"{name}.log", "w") as log:
            stdout, stderr = sys.stdout, sys.stderr
            sys.stdout = sys.stderr = log
            try:
                train(cfg, run_dir)
            finally:
                sys.stdout, sys.stderr = stdout, stderr
        seconds = time.perf_counter() - start
    # full test tiles of both datasets, overlapping sliding windows
    loaded = load_model_checkpoint(run_dir / "model.pt")
    start = time.perf_counter()
    result = evaluate_model(
        loaded,
        datasets_of(loaded),
        default_predict(args.patch, 0.5, 4, "cpu"),
        split="test",
        min_height=0.5,  # robust table; the main table counts every reference > 0
        progress=False,
    )
    return name, seconds, result, time.perf_counter() - start


def last_terms(run_dir: Path, last: int = 20) -> dict[str, float]:
    """Mean of every logged loss term over the last ``last`` logged iterations."""
    files = sorted(run_dir.glob("logs/version_*/metrics.csv"))
    if not files:
        return {}
    rows = list(csv.DictReader(open(files[-1])))
    out: dict[str, float] = {}
    for key in rows[0]:
        if not key.startswith("train/"):
            continue
        values = [float(r[key]) for r in rows if r.get(key)]
        if values:
            out[key.removeprefix("train/")] = sum(values[-last:]) / len(values[-last:])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-o", "--out", default="benchmarks/results/method_study")
    parser.add_argument("--work", help="folder for data and runs (default: OUT/work)")
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--crop", type=int, default=64)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--patch", type=int, default=256)
    parser.add_argument(
        "--tiles", type=int, default=4, help="tiles per dataset (half train, half test)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--jobs", type=int, default=2, help="parallel training processes (1 thread each)"
    )
    parser.add_argument("--methods", nargs="*", help="subset, e.g. jtl semimtl_m2")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="config override for every run (repeatable)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    args.work = str(Path(args.work or out / "work").resolve())
    Path(args.work).mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    prepared = prepare(Path(args.work), args.seed, args.tiles).resolve()
    methods = [m for m in METHODS if not args.methods or run_name(*m) in args.methods]
    jobs = [(args, prepared, method, mode) for method, mode in methods]
    timings: dict[str, float] = {}
    eval_timings: dict[str, float] = {}
    results = {}

    def done(item):
        name, seconds, result, eval_seconds = item
        timings[name], eval_timings[name], results[name] = seconds, eval_seconds, result
        print(f"{name}: trained in {seconds:.0f} s, evaluated in {eval_seconds:.0f} s", flush=True)

    if args.jobs > 1:
        with mp.get_context("spawn").Pool(args.jobs) as pool:
            for item in pool.imap_unordered(train_one, jobs):
                done(item)
    else:
        for job in jobs:
            done(train_one(job))

    from semimtl_geo.training.evaluate import (
        add_delta_m,
        build_report,
        report_markdown,
        sanitize,
        write_report,
    )

    runs = Path(args.work) / "runs"
    names = [run_name(*m) for m in methods]
    rows = [results[n] for n in names]
    add_delta_m(rows, results.get("stl_seg"), results.get("stl_height"))
    report = sanitize(
        build_report(
            rows,
            list(rows[0].datasets),
            "m",
            [
                "Split 'test' (full tiles, 50 % overlapping windows); "
                "AbsRel and δ over every reference height > 0 (the paper's definition); "
                "the robust tables use references > 0.5 m.",
                f"CPU scale: {args.steps} iterations, ResNet18 from scratch, {args.crop} px crops, "
                f"{args.batch} crops per dataset and iteration; synthesized data.",
            ],
        )
    )
    report["study"] = {
        "command": "python benchmarks/method_study.py " + " ".join(sys.argv[1:]),
        "steps": args.steps,
        "crop": args.crop,
        "batch_per_dataset": args.batch,
        "encoder": "resnet18 (random init, output stride 16)",
        "tiles_per_dataset": args.tiles,
        "train_seconds": timings,
        "eval_seconds": eval_timings,
        "total_seconds": time.perf_counter() - t0,
        "final_loss_terms": {n: last_terms(runs / n) for n in names},
        "torch_threads_per_run": 1,
        "parallel_runs": args.jobs,
    }
    write_report(report, out / "report")
    text = report_markdown(report)
    terms = report["study"]["final_loss_terms"]
    sections = [
        ("Mean loss terms over the last logged iterations (weighted as in the G objective)",
         lambda k: not k.startswith(("grad_norm/", "D_acc/"))),
        ("Gradient norm each G term sends to the encoder (weighted; mean of the last logged "
         "iterations)", lambda k: k.startswith("grad_norm/")),
        ("Discriminator pixel accuracies (acc_gt: ground truth as ground truth; acc_pred: "
         "predictions as not ground truth; acc_domain: predictions as their own dataset, "
         "chance 1/K)", lambda k: k.startswith("D_acc/")),
    ]
    lines = []
    for title, keep in sections:
        lines += ["", f"## {title}", ""]
        for n in names:
            shown = ", ".join(f"{k}={v:.4g}" for k, v in sorted(terms[n].items()) if keep(k))
            if shown:
                lines.append(f"- {n}: {shown}")
    lines += [
        "",
        f"Command: `{report['study']['command']}`; total {report['study']['total_seconds']:.0f} s.",
    ]
    (out / "report.md").write_text(text + "\n".join(lines) + "\n")
    print((out / "report.md").read_text())
    print(json.dumps({"train_seconds": timings, "eval_seconds": eval_timings}, indent=1))


if __name__ == "__main__":
    main()
