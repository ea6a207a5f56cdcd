"""Method study: every method of Table 2 on the same synthetic ISPRS data, several seeds, CPU.

Steps:
1. ``synthesize-isprs`` and ``prepare-isprs`` the demo's Potsdam/Vaihingen-style data
   (seed 0; every method and seed trains on the same tiles);
2. train every method (STL Seg/Depth, DA Seg/Depth, JTL, SemiSD, SemiMTL M1/M2/M3) with
   every seed, all with the demo's CPU recipe (``semimtl-geo demo``: ResNet18 from scratch,
   AdamW, BatchNorm statistics per dataset (``model.norm=domain``), precise BN, the
   class-balanced cross-entropy, the same crops, batch and iterations; cli/cmd_demo.py
   ``PROFILES``) on top of
   ``configs/isprs.yaml`` (its loss weights, lambdas and discriminator optimiser);
3. evaluate every run on the full test tiles of both datasets (overlapping sliding
   windows) and write one report: mean ± std over seeds of every metric, ΔM against the
   same seed's STL runs, the paired per-seed difference SemiMTL - JTL on each unlabelled
   task (Vaihingen segmentation, Potsdam height), and the adversarial diagnostics (loss
   terms, the gradient norm each term sends to the encoder, the discriminators'
   accuracies including the domain accuracy), each as mean ± std over seeds.

Usage::

    python benchmarks/method_study.py -o benchmarks/results/method_study --seeds 0 1 2
    python benchmarks/method_study.py -o /tmp/study_quick --quick   # plumbing, seconds

``--set key=value`` (repeatable) overrides the training config of every run, e.g.
``--set loss.lambda_inter=0.001``. Runs already in ``--work`` are reused (evaluated again).
"""

import argparse
import csv
import json
import math
import multiprocessing as mp
import os
import resource
import statistics
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
#: Relative cost of one run per method (one thread, the demo's recipe, 500 iterations:
#: seconds of training measured on 1 Dec), for scheduling only: the longest runs start
#: first, so that the two workers finish together instead of one running alone at the end.
RUN_COST = {"semimtl": 333, "semisd": 339, "da_height": 225, "jtl": 205, "da_seg": 193,
            "stl_height": 103, "stl_seg": 88}
#: Per-dataset metrics shown in the table: (dataset, task, key, label, digits).
TABLE = [
    ("potsdam", "seg", "pAcc", "Potsdam pAcc", 1),
    ("potsdam", "seg", "mIoU", "Potsdam mIoU", 1),
    ("potsdam", "height", "RMSE", "Potsdam RMSE (m, unlabelled)", 2),
    ("potsdam", "height", "r", "Potsdam height r (unlabelled)", 2),
    ("vaihingen", "seg", "pAcc", "Vaihingen pAcc", 1),
    ("vaihingen", "seg", "mIoU", "Vaihingen mIoU (unlabelled)", 1),
    ("vaihingen", "height", "RMSE", "Vaihingen RMSE (m)", 2),
    ("vaihingen", "height", "r", "Vaihingen height r", 2),
]
#: The unlabelled tasks on which SemiMTL is compared with JTL, seed by seed.
PAIRED = [
    ("vaihingen", "seg", "mIoU", "Vaihingen mIoU (unlabelled seg)", +1),
    ("potsdam", "height", "RMSE", "Potsdam height RMSE (unlabelled)", -1),
    ("potsdam", "height", "r", "Potsdam height r (unlabelled)", +1),
]


def run_name(method: str, mode: str) -> str:
    return f"{method}_{mode}" if method == "semimtl" else method


def profile_of(args: argparse.Namespace) -> dict:
    """The demo's profile (sizes, steps, crops, optimiser), with this study's overrides."""
    from semimtl_geo.cli.cmd_demo import PROFILES

    profile = dict(PROFILES["quick" if args.quick else "default"])
    for key in ("steps", "crop", "batch", "tiles"):
        if getattr(args, key) is not None:
            profile[key] = getattr(args, key)
    return profile


def prepare(out: Path, profile: dict) -> Path:
    from semimtl_geo.cli.main import main

    raw, prepared = out / "raw", out / "prepared"
    if not (prepared / "manifest.json").is_file():
        steps = [
            ["synthesize-isprs", "-o", str(raw), "--seed", "0", "--overwrite",
             "--size-potsdam", str(profile["size_potsdam"]),
             "--size-vaihingen", str(profile["size_vaihingen"]),
             "--tiles-potsdam", str(profile["tiles"]),
             "--tiles-vaihingen", str(profile["tiles"])],
            ["prepare-isprs", "--potsdam", str(raw / "potsdam"), "--vaihingen",
             str(raw / "vaihingen"), "-o", str(prepared), "--gsd", str(profile["gsd"]),
             "--no-progress", "--overwrite"],
        ]
        for argv in steps:
            if main(argv) != 0:
                raise SystemExit(f"method study: '{' '.join(argv[:1])}' failed")
    return prepared


def train_one(job: tuple) -> dict:
    """Train (unless present) and evaluate one (method, seed); return its results."""
    args, profile, prepared, class_weights, method, mode, seed = job
    import logging
    import warnings

    import torch

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    from semimtl_geo.checkpoint import load_model_checkpoint
    from semimtl_geo.cli.cmd_demo import demo_config
    from semimtl_geo.training.config import load_config, read_yaml_config
    from semimtl_geo.training.engine import train
    from semimtl_geo.training.evaluate import datasets_of, default_predict, evaluate_model

    name = run_name(method, mode)
    run_dir = Path(args.work) / "runs" / f"seed{seed}" / name
    seconds = cpu_seconds = float("nan")
    if not (run_dir / "model.pt").is_file():
        # configs/isprs.yaml (loss weights, lambdas, D optimiser) <- the demo's CPU recipe
        demo = demo_config(prepared, profile, "cpu", seed, 1, class_weights)
        base = read_yaml_config(REPO / "configs" / "isprs.yaml")
        for section in ("model", "data", "optim", "loss", "trainer", "eval"):
            base[section] = {**base.get(section, {}), **demo.get(section, {})}
        overrides = [
            f"method={method}", f"mode={mode}", f"seed={seed}",
            "trainer.progress_bar=false", "trainer.preview_every=0", "trainer.accelerator=cpu",
            # the demo skips them for time; the study reports them
            "trainer.grad_diagnostics=true",
            *args.overrides,
        ]
        cfg = load_config(None, overrides, base=base)
        before = resource.getrusage(resource.RUSAGE_SELF)
        start = time.perf_counter()
        log_path = Path(args.work) / "logs" / f"seed{seed}_{name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "w") as log:
            stdout, stderr = sys.stdout, sys.stderr
            sys.stdout = sys.stderr = log
            try:
                train(cfg, run_dir)
            finally:
                sys.stdout, sys.stderr = stdout, stderr
        seconds = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_SELF)
        cpu_seconds = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    loaded = load_model_checkpoint(run_dir / "model.pt")
    start = time.perf_counter()
    result = evaluate_model(
        loaded,
        datasets_of(loaded),
        default_predict(profile["patch"], 0.5, 4, "cpu"),
        split="test",
        min_height=0.5,  # robust table; the main table counts every reference > 0
        progress=False,
    )
    return {"name": name, "seed": seed, "train_seconds": seconds, "cpu_seconds": cpu_seconds,
            "eval_seconds": time.perf_counter() - start, "result": result,
            "terms": last_terms(run_dir)}


def last_terms(run_dir: Path, last: int = 5) -> dict[str, float]:
    """Mean of every logged training term over the last ``last`` logged iterations."""
    files = sorted(run_dir.glob("logs/version_*/metrics.csv"))
    if not files:
        return {}
    with open(files[-1]) as handle:
        rows = list(csv.DictReader(handle))
    out: dict[str, float] = {}
    for key in rows[0] if rows else []:
        if not key.startswith("train/"):
            continue
        values = [float(r[key]) for r in rows if r.get(key)]
        if values:
            out[key.removeprefix("train/")] = sum(values[-last:]) / len(values[-last:])
    return out


# ------------------------------------------------------------------------- statistics


def mean_std(values: list[float]) -> tuple[float, float, int]:
    """Mean, sample standard deviation (n - 1; NaN for one value) and count of finite values."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return float("nan"), float("nan"), 0
    std = statistics.stdev(finite) if len(finite) > 1 else float("nan")
    return statistics.fmean(finite), std, len(finite)


def fmt(stats: tuple[float, float, int], digits: int, general: bool = False) -> str:
    """``mean ± std`` with ``digits`` decimals (``general``: significant digits)."""
    mean, std, n = stats
    if not n or mean is None:
        return ""
    spec = f".{digits}{'g' if general else 'f'}"
    shown = format(mean, spec)
    if std is not None and not math.isnan(std):
        shown += " ± " + format(std, spec)
    return shown


def metric(row, dataset: str, task: str, key: str) -> float:
    res = row.datasets.get(dataset)
    values = getattr(res, task, None) if res is not None else None
    value = (values or {}).get(key)
    return float("nan") if value is None else float(value)


def summarise(results: dict[tuple[str, int], dict], names: list[str], seeds: list[int]) -> dict:
    """Per method: every metric over seeds; per SemiMTL mode: paired differences to JTL."""
    from semimtl_geo.training.evaluate import add_delta_m

    for seed in seeds:  # ΔM against the STL runs of the same seed
        rows = [results[(n, seed)]["result"] for n in names if (n, seed) in results]
        stl_seg = results.get(("stl_seg", seed), {}).get("result")
        stl_height = results.get(("stl_height", seed), {}).get("result")
        add_delta_m(rows, stl_seg, stl_height)
    methods: dict[str, dict] = {}
    for n in names:
        runs = [results[(n, s)] for s in seeds if (n, s) in results]
        if not runs:
            continue
        label = runs[0]["result"].label
        entry: dict = {"label": label, "seeds": [r["seed"] for r in runs], "metrics": {}}
        datasets = runs[0]["result"].datasets
        for dataset, res in datasets.items():
            for task in ("seg", "height"):
                if getattr(res, task) is None:
                    continue
                keys = (["pAcc", "mIoU", "mF1"] if task == "seg"
                        else ["RMSE", "AbsRel", "delta1", "r", "AbsRel_robust", "delta1_robust"])
                for key in keys:
                    values = [metric(r["result"], dataset, task, key) for r in runs]
                    entry["metrics"][f"{dataset}/{task}/{key}"] = {
                        "per_seed": values, "mean_std": mean_std(values)}
                if task == "seg":
                    ious = [r["result"].datasets[dataset].seg["IoU"] for r in runs]
                    entry["metrics"][f"{dataset}/seg/IoU"] = {
                        "per_seed": ious,
                        "mean_std": [mean_std([i[c] for i in ious]) for c in range(len(ious[0]))],
                    }
            values = [r["result"].datasets[dataset].delta_m for r in runs]
            entry["metrics"][f"{dataset}/delta_m"] = {"per_seed": values,
                                                      "mean_std": mean_std(values)}
        keys = sorted({k for r in runs for k in r["terms"]})
        entry["terms"] = {k: mean_std([r["terms"].get(k, float("nan")) for r in runs])
                          for k in keys}
        entry["train_seconds"] = [r["train_seconds"] for r in runs]
        entry["cpu_seconds"] = [r["cpu_seconds"] for r in runs]
        methods[n] = entry
    paired: dict[str, dict] = {}
    for n in names:
        if not n.startswith("semimtl") or "jtl" not in methods:
            continue
        for dataset, task, key, label, sign in PAIRED:
            diffs, better = [], 0
            for s in seeds:
                if (n, s) not in results or ("jtl", s) not in results:
                    continue
                d = (metric(results[(n, s)]["result"], dataset, task, key)
                     - metric(results[("jtl", s)]["result"], dataset, task, key))
                diffs.append(d)
                better += int(math.isfinite(d) and sign * d > 0)
            paired[f"{n}/{dataset}/{task}/{key}"] = {
                "method": methods[n]["label"], "task": label, "per_seed": diffs,
                "mean_std": mean_std(diffs), "seeds_better": better, "seeds": len(diffs),
                "better_is": "higher" if sign > 0 else "lower",
            }
    return {"methods": methods, "paired": paired}


def markdown(summary: dict, study: dict) -> str:
    methods, paired = summary["methods"], summary["paired"]
    seeds = study["seeds"]
    lines = [
        "# Method study (synthetic ISPRS data, CPU)",
        "",
        f"Seeds {', '.join(map(str, seeds))} (n = {len(seeds)}); every cell is mean ± sample "
        "std over the seeds. Same data, iterations and recipe for every method: "
        f"{study['recipe']}. Test split: full tiles, 50 % overlapping windows. Heights in "
        "metres; r = Pearson correlation of predicted and reference height over every valid "
        "pixel; ΔM (eq. 10) against the same seed's STL runs (mIoU for seg, RMSE for height).",
        "",
        "| method | " + " | ".join(t[3] for t in TABLE) + " | ΔM Potsdam | ΔM Vaihingen |",
        "|---" * (len(TABLE) + 3) + "|",
    ]
    for entry in methods.values():
        m = entry["metrics"]
        cells = [fmt(m[f"{d}/{t}/{k}"]["mean_std"], digits) if f"{d}/{t}/{k}" in m else ""
                 for d, t, k, _, digits in TABLE]
        cells += [fmt(m[f"{d}/delta_m"]["mean_std"], 1) if f"{d}/delta_m" in m else ""
                  for d in ("potsdam", "vaihingen")]
        lines.append(f"| {entry['label']} | " + " | ".join(cells) + " |")
    lines += ["", "## Per-class IoU on Potsdam (labelled) and Vaihingen (unlabelled for the "
              "seg-on-Potsdam methods)", ""]
    first = next(iter(methods.values()))
    n_cls = len(first["metrics"].get("potsdam/seg/IoU", {}).get("mean_std", []))
    classes = study.get("classes") or [str(c) for c in range(n_cls)]
    lines += ["| method | dataset | " + " | ".join(classes) + " |",
              "|---" * (len(classes) + 2) + "|"]
    for entry in methods.values():
        for dataset in ("potsdam", "vaihingen"):
            ious = entry["metrics"].get(f"{dataset}/seg/IoU")
            if ious:
                cells = [fmt(tuple(s), 1) for s in ious["mean_std"]]
                lines.append(f"| {entry['label']} | {dataset} | " + " | ".join(cells) + " |")
    lines += ["", "## SemiMTL - JTL on the unlabelled tasks, paired by seed", "",
              "| SemiMTL mode | task | per-seed difference | mean ± std | seeds where SemiMTL "
              "is better |", "|---|---|---|---|---|"]
    for item in paired.values():
        per_seed = ", ".join(f"{d:+.2f}" for d in item["per_seed"])
        lines.append(f"| {item['method']} | {item['task']} ({item['better_is']} is better) | "
                     f"{per_seed} | {fmt(tuple(item['mean_std']), 2)} | "
                     f"{item['seeds_better']}/{item['seeds']} |")
    sections = [
        ("Loss terms over the last logged iterations (weighted as in the G objective)",
         lambda k: not k.startswith(("grad_norm/", "D_acc/", "lr"))),
        ("Gradient norm each G term sends to the encoder (weighted; last logged iterations)",
         lambda k: k.startswith("grad_norm/")),
        ("Discriminator pixel accuracies (acc_gt: ground truth judged ground truth; acc_pred: "
         "predictions judged not ground truth; acc_domain: predictions judged as their own "
         "dataset, chance 1/K = 0.5 with two datasets)", lambda k: k.startswith("D_acc/")),
    ]
    for title, keep in sections:
        lines += ["", f"## {title}", "", "Mean ± std over seeds.", ""]
        for entry in methods.values():
            shown = ", ".join(f"{k}={fmt(tuple(v), 3, general=True)}"
                              for k, v in sorted(entry["terms"].items()) if keep(k))
            if shown:
                lines.append(f"- {entry['label']}: {shown}")
    lines += ["", "## Cost", "",
              "| method | train s per seed (wall) | train CPU s per seed |", "|---|---|---|"]
    for entry in methods.values():
        wall = ", ".join(f"{v:.0f}" for v in entry["train_seconds"])
        cpu = ", ".join(f"{v:.0f}" for v in entry["cpu_seconds"])
        lines.append(f"| {entry['label']} | {wall} | {cpu} |")
    lines += ["", f"Command: `{study['command']}`; total {study['total_seconds']:.0f} s wall "
              f"with {study['parallel_runs']} runs in parallel (1 thread each); load average at "
              f"the end {study['load_average_end']:.1f}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-o", "--out", default="benchmarks/results/method_study")
    parser.add_argument("--work", help="folder for data and runs (default: OUT/work)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--quick", action="store_true",
                        help="the demo's --quick sizes (2 iterations): checks the plumbing only")
    parser.add_argument("--steps", type=int, help="iterations (default: the demo's)")
    parser.add_argument("--crop", type=int, help="crop size (default: the demo's)")
    parser.add_argument("--batch", type=int, help="crops per dataset (default: the demo's)")
    parser.add_argument("--tiles", type=int, help="tiles per dataset (half train, half test)")
    parser.add_argument("--jobs", type=int, default=2,
                        help="parallel training processes (1 thread each)")
    parser.add_argument("--methods", nargs="*", help="subset, e.g. stl_seg jtl semimtl_m2")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="config override for every run (repeatable)")
    parser.add_argument("--markdown-only", action="store_true",
                        help="only rewrite OUT/report.md from OUT/report.json")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if args.markdown_only:
        report = json.loads((out / "report.json").read_text())
        (out / "report.md").write_text(markdown(report, report["study"]))
        return
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    args.work = str(Path(args.work or out / "work").resolve())
    Path(args.work).mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    profile = profile_of(args)
    prepared = prepare(Path(args.work), profile).resolve()
    methods = [m for m in METHODS if not args.methods or run_name(*m) in args.methods]
    names = [run_name(*m) for m in methods]
    from semimtl_geo.cli.cmd_demo import demo_class_weights

    class_weights = demo_class_weights(prepared, profile)  # once: every run trains with them
    # the costliest runs first (longest-processing-time order), so that the workers
    # finish together
    jobs = [(args, profile, prepared, class_weights, method, mode, seed)
            for method, mode in sorted(methods, key=lambda m: -RUN_COST[m[0]])
            for seed in args.seeds]
    results: dict[tuple[str, int], dict] = {}

    def done(item: dict) -> None:
        results[(item["name"], item["seed"])] = item
        print(f"{item['name']} seed {item['seed']}: trained in {item['train_seconds']:.0f} s, "
              f"evaluated in {item['eval_seconds']:.0f} s ({len(results)}/{len(jobs)})",
              flush=True)

    if args.jobs > 1:
        with mp.get_context("spawn").Pool(args.jobs) as pool:
            for item in pool.imap_unordered(train_one, jobs):
                done(item)
    else:
        for job in jobs:
            done(train_one(job))

    from semimtl_geo.training.evaluate import sanitize

    summary = summarise(results, names, args.seeds)
    recipe = (f"ResNet18 from scratch (output stride {profile['output_stride']}), "
              f"{profile['optimizer']} lr {profile['lr']}, {profile['steps']} iterations of "
              f"{profile['batch']} crops of {profile['crop']} px per dataset, "
              f"{profile['tiles']} tiles per dataset (half train, half test) at "
              f"{profile['gsd']} m, scale augmentation {profile['scale_range']}, "
              f"model.norm={profile.get('norm', 'batch')}, "
              f"PSP fusion {profile.get('seg_channels', 512)} channels"
              + (" with the 1/4 skip" if profile.get("seg_skip") else "")
              + f", height head {profile.get('height_channels', 256)} channels, "
              f"discriminator width {profile.get('discriminator_width', 64)}, precise BN "
              f"{profile.get('precise_bn_batches', 0)} batches, segmentation class weights: "
              + ("none" if profile.get("class_weight_power") is None else
                 f"median-frequency ** {profile['class_weight_power']} of the Potsdam "
                 "training labels"))
    first = results[next(iter(results))]["result"]
    study = {
        "command": "python benchmarks/method_study.py " + " ".join(sys.argv[1:] if argv is None
                                                                   else argv),
        "seeds": args.seeds,
        "recipe": recipe,
        "profile": profile,
        "overrides": args.overrides,
        "classes": _class_names(prepared),
        "total_seconds": time.perf_counter() - t0,
        "parallel_runs": args.jobs,
        "torch_threads_per_run": 1,
        "load_average_end": os.getloadavg()[0],
        "datasets": list(first.datasets),
    }
    report = sanitize({"study": study, **summary})
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "report.md").write_text(markdown(report, study))
    print((out / "report.md").read_text())


def _class_names(prepared: Path) -> list[str]:
    manifest = json.loads((prepared / "manifest.json").read_text())
    return list(manifest.get("classes", {}).get("names", []))


if __name__ == "__main__":
    main()
