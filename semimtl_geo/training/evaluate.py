"""Full-tile evaluation in the layout of the paper's Table 2 (section 4.1, eq. 10).

Every checkpoint is evaluated on the **full test images/tiles** of every dataset listed
in its training config (not on training crops), predicted with overlapping,
Hann-blended sliding windows (:func:`semimtl_geo.inference.predict_array`). Each dataset
reports the metrics of every task that has ground truth there, whatever the model was
trained on:

* segmentation: pAcc, mIoU (percent; :class:`semimtl_geo.metrics.SegmentationMetrics`),
  plus per-class IoU/F1 in the JSON;
* height: AbsRel, RMSE and delta_1..3 on the valid mask of
  :class:`semimtl_geo.metrics.HeightMetrics`, **in metres**: predictions are converted
  with the checkpoint's ``height_scale`` and references come in metres from the dataset
  kind;
* ΔM (eq. 10) per dataset against the STL baselines: mIoU of ``--baseline-seg`` and RMSE
  of ``--baseline-height`` on the same dataset.
"""

import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from semimtl_geo.atomic import atomic_write_text
from semimtl_geo.checkpoint import LoadedModel
from semimtl_geo.data.datamodule import EvalSample, datamodule
from semimtl_geo.errors import UserError
from semimtl_geo.metrics import HeightMetrics, SegmentationMetrics, delta_m
from semimtl_geo.outputs import check_output_file
from semimtl_geo.training.config import DatasetConfig, dataset_from_dict
from semimtl_geo.training.methods import method_label

#: Paper table whose layout a set of dataset kinds reproduces, and what its height task
#: measures (street-view "height" is depth from the camera, in metres).
PAPER_TABLES: tuple[tuple[frozenset[str], str, str], ...] = (
    (frozenset({"isprs"}), "Table 2", "height"),
    (frozenset({"cityscapes", "cityscapes_extra"}), "Table 1", "depth"),
    (frozenset({"cityscapes", "synscapes"}), "Table 3", "depth"),
)


def paper_table(kinds: Iterable[str]) -> tuple[str, str]:
    """Return ``(table, quantity)`` for the dataset kinds of an evaluation."""
    kinds = set(kinds)
    for members, table, quantity in PAPER_TABLES:
        if kinds <= members:
            return table, quantity
    return "Tables 1-3", "height"


#: ``predict(loaded, image, tasks) -> {"class": uint8 HxW, "height": float32 HxW metres}``
PredictFn = Callable[[LoadedModel, np.ndarray, Sequence[str]], dict[str, np.ndarray]]


@dataclass
class DatasetResult:
    """Metrics of one model on one dataset (``None`` where a task cannot be measured)."""

    seg: dict[str, Any] | None = None
    height: dict[str, Any] | None = None
    samples: int = 0
    delta_m: float | None = None


@dataclass
class ModelResult:
    """One table row: a checkpoint and its per-dataset results."""

    label: str
    checkpoint: str
    tasks: list[str]
    datasets: dict[str, DatasetResult] = field(default_factory=dict)


def model_label(loaded: LoadedModel) -> str:
    """Row label from the training config, e.g. ``SemiMTL (M2)``."""
    cfg = loaded.config or {}
    label = method_label(str(cfg.get("method")), str(cfg.get("mode", "m2")))
    if label is None:
        return Path(loaded.path).stem if loaded.path else "model"
    return label


def datasets_of(loaded: LoadedModel) -> list[DatasetConfig]:
    """Return the dataset list stored in a checkpoint's training config."""
    raw = (loaded.config or {}).get("data", {}).get("datasets", [])
    return [dataset_from_dict(dict(d), f"data.datasets[{i}]") for i, d in enumerate(raw)]


def default_predict(
    patch_size: int | None, overlap: float | None, batch_size: int, device: str
) -> PredictFn:
    """Sliding-window prediction with :func:`semimtl_geo.inference.predict_array`."""

    def predict(
        loaded: LoadedModel, image: np.ndarray, tasks: Sequence[str]
    ) -> dict[str, np.ndarray]:
        from semimtl_geo.inference import predict_array

        return predict_array(
            loaded,
            image,
            patch_size=patch_size,
            overlap=overlap,
            batch_size=batch_size,
            device=device,
            tasks=list(tasks),
        )

    return predict


def evaluate_model(
    loaded: LoadedModel,
    datasets: Sequence[DatasetConfig],
    predict: PredictFn,
    split: str = "test",
    max_samples: int | None = None,
    min_height: float = 0.0,
    progress: bool = True,
) -> ModelResult:
    """Evaluate one model on the full evaluation images of ``datasets``.

    A ``model.norm=domain`` model normalises each dataset with the statistics of the
    training dataset of the same name (the first one for a dataset it did not train on).
    """
    tasks = list(loaded.model.tasks)
    num_classes = len(loaded.meta.classes)
    result = ModelResult(model_label(loaded), str(loaded.path or ""), tasks)
    domains = getattr(loaded.model, "domains", ())  # only model.norm=domain models have any
    active = getattr(loaded.model, "domain", None)
    for spec in datasets:
        if domains:
            loaded.model.select_domain(spec.name if spec.name in domains else None)
        seg = SegmentationMetrics(num_classes, loaded.meta.ignore_index)
        height = HeightMetrics(min_height=min_height)
        has_seg = has_height = False
        n = 0
        samples: Iterable[EvalSample] = datamodule(spec).eval_samples(split)
        bar = tqdm(
            samples,
            desc=f"{result.label} / {spec.name}",
            unit="tile",
            disable=not progress,
            leave=False,
        )
        for sample in bar:
            if max_samples is not None and n >= max_samples:
                break
            wanted = [
                t
                for t in tasks
                if (t == "seg" and sample.mask is not None)
                or (t == "height" and sample.height is not None)
            ]
            n += 1
            if not wanted:
                continue
            out = predict(loaded, sample.image, wanted)
            if "seg" in wanted:
                has_seg = True
                seg.update(out["class"], sample.mask)
            if "height" in wanted:
                has_height = True
                height.update(out["height"], sample.height)
        result.datasets[spec.name] = DatasetResult(
            seg=seg.compute() if has_seg else None,
            height=height.compute() if has_height else None,
            samples=n,
        )
    if domains:
        loaded.model.select_domain(active)
    return result


def add_delta_m(
    rows: Sequence[ModelResult],
    baseline_seg: ModelResult | None,
    baseline_height: ModelResult | None,
) -> None:
    """Fill ``delta_m`` of every row and dataset (eq. 10; mIoU for seg, RMSE for height)."""
    for row in rows:
        for name, res in row.datasets.items():
            model: dict[str, float] = {}
            base: dict[str, float] = {}
            bs = baseline_seg.datasets.get(name) if baseline_seg else None
            bh = baseline_height.datasets.get(name) if baseline_height else None
            if res.seg and bs and bs.seg and _finite(res.seg["mIoU"]) and _finite(bs.seg["mIoU"]):
                model["mIoU"], base["mIoU"] = res.seg["mIoU"], bs.seg["mIoU"]
            if (
                res.height
                and bh
                and bh.height
                and _finite(res.height["RMSE"])
                and _finite(bh.height["RMSE"])
            ):
                model["RMSE"], base["RMSE"] = res.height["RMSE"], bh.height["RMSE"]
            try:
                res.delta_m = delta_m(model, base) if model else None
            except ValueError:
                res.delta_m = None


def _finite(v: Any) -> bool:
    return v is not None and isinstance(v, int | float) and math.isfinite(v)


def build_report(
    rows: Sequence[ModelResult],
    dataset_names: Sequence[str],
    height_unit: str = "m",
    notes: Sequence[str] = (),
    table: str = "Table 2",
    quantity: str = "height",
) -> dict[str, Any]:
    """JSON-serialisable report: rows, per dataset metrics, units and notes."""
    return {
        "table": table,
        "quantity": quantity,
        "height_unit": height_unit,
        "datasets": list(dataset_names),
        "notes": list(notes),
        "rows": [
            {
                "method": r.label,
                "checkpoint": r.checkpoint,
                "tasks": r.tasks,
                "datasets": {
                    name: {
                        "seg": res.seg,
                        "height": res.height,
                        "samples": res.samples,
                        "delta_m": res.delta_m,
                    }
                    for name, res in r.datasets.items()
                },
            }
            for r in rows
        ],
    }


def _fmt(value: Any, digits: int) -> str:
    if not _finite(value):
        return ""
    return f"{value:.{digits}f}"


def report_markdown(report: dict[str, Any]) -> str:
    """Table 2 layout: one block per dataset, rows = methods."""
    unit = report["height_unit"]
    quantity = report.get("quantity", "height")
    lines = [f"# Evaluation (paper {report.get('table', 'Table 2')} layout)", ""]
    lines.append(
        f"{quantity.capitalize()}s and {quantity} errors in **{unit}** (predictions x the "
        "checkpoint's height scale). "
        "pAcc, mIoU, δ in %; AbsRel and δ divide by the reference height, so they use the "
        "valid references > 0 as in the paper (near-ground references count); RMSE uses every "
        "valid pixel. "
        "ΔM (eq. 10) is relative to the STL baselines (mIoU for segmentation, RMSE for "
        "height); positive is better."
    )
    for note in report.get("notes", []):
        lines += ["", f"- {note}"]
    header = f"| Method | pAcc | mIoU | AbsRel | RMSE ({unit}) | δ1 | δ2 | δ3 | ΔM (%) |"
    for name in report["datasets"]:
        lines += ["", f"## {name}", "", header, "|" + " --- |" * 9]
        for row in report["rows"]:
            res = row["datasets"].get(name)
            if res is None:
                continue
            seg, h = res["seg"] or {}, res["height"] or {}
            dm = res["delta_m"]
            cells = [
                row["method"],
                _fmt(seg.get("pAcc"), 1),
                _fmt(seg.get("mIoU"), 1),
                _fmt(h.get("AbsRel"), 3),
                _fmt(h.get("RMSE"), 3),
                _fmt(h.get("delta1"), 1),
                _fmt(h.get("delta2"), 1),
                _fmt(h.get("delta3"), 1),
                "" if dm is None else f"{dm:+.1f}",
            ]
            lines.append("| " + " | ".join(cells) + " |")
    lines += _robust_tables(report)
    return "\n".join(lines) + "\n"


def _robust_tables(report: dict[str, Any]) -> list[str]:
    """Return the robust height metrics tables (references above ``min_height``)."""
    unit = report["height_unit"]
    blocks: list[str] = []
    for name in report["datasets"]:
        rows = []
        threshold = None
        for row in report["rows"]:
            res = row["datasets"].get(name)
            h = (res or {}).get("height") or {}
            if not h or "AbsRel_robust" not in h:
                continue
            threshold = h.get("min_height", threshold)
            cells = [
                row["method"],
                _fmt(h.get("AbsRel_robust"), 3),
                _fmt(h.get("delta1_robust"), 1),
                _fmt(h.get("delta2_robust"), 1),
                _fmt(h.get("delta3_robust"), 1),
                str(h.get("pixels_positive_robust", "")),
            ]
            rows.append("| " + " | ".join(cells) + " |")
        if rows and threshold:
            blocks += [
                "",
                f"### {name}: robust height metrics (references > {threshold:g} {unit})",
                "",
                "Not the paper's definition: AbsRel and δ over references above the threshold "
                "only (ground pixels left out); RMSE is the same as above.",
                "",
                "| Method | AbsRel | δ1 | δ2 | δ3 | pixels |",
                "|" + " --- |" * 6,
                *rows,
            ]
    return blocks


def report_paths(out: str | Path) -> tuple[Path, Path]:
    """``(<out>.md, <out>.json)``; a ``.md``/``.json`` suffix on ``out`` is dropped."""
    out = Path(out)
    if out.suffix in (".md", ".json"):
        out = out.with_suffix("")
    return out.with_name(out.name + ".md"), out.with_name(out.name + ".json")


def check_report_path(out: str | Path) -> tuple[Path, Path]:
    """Check, before evaluating, that both report files can be written.

    Raises:
        UserError: a report path is a folder, or its folder cannot be created or written.

    """
    md, js = report_paths(out)
    for path in (md, js):
        check_output_file(path, "Report file")
    return md, js


def write_report(report: dict[str, Any], out: str | Path) -> tuple[Path, Path]:
    """Write ``<out>.md`` and ``<out>.json`` (a ``.md``/``.json`` suffix on ``out`` is dropped)."""
    md, js = report_paths(out)
    report = sanitize(report)
    text = json.dumps(report, indent=2, allow_nan=False, default=_json_default)
    atomic_write_text(js, text + "\n")
    atomic_write_text(md, report_markdown(report))
    return md, js


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def sanitize(obj: Any) -> Any:
    """Replace NaN/inf by ``None`` so the JSON is standard."""
    if isinstance(obj, dict):
        return {k: sanitize(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [sanitize(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _names(names: Sequence[str]) -> str:
    shown = ", ".join(names[:8])
    return shown + (", ..." if len(names) > 8 else "")


def check_class_tables(models: Sequence[LoadedModel], specs: Sequence[DatasetConfig]) -> None:
    """Refuse to score a segmentation head against labels of another class table.

    pAcc, mIoU and ΔM only mean something when prediction and reference index the same
    classes: a 7-class model scored on 6-class ISPRS labels would average an IoU of a
    class the labels cannot contain.

    Raises:
        UserError: a model whose class names differ from a dataset's.

    """
    for spec in specs:
        seg_models = [m for m in models if "seg" in m.model.tasks]
        if not seg_models:
            return
        reference = datamodule(spec).describe().classes
        if reference is None:  # a kind that states no class table
            continue
        for loaded in seg_models:
            ours = list(loaded.meta.classes.names)
            theirs = list(reference.names)
            if ours != theirs:
                name = Path(loaded.path).name if loaded.path else model_label(loaded)
                raise UserError(
                    f"Checkpoint '{name}' predicts {len(ours)} classes ({_names(ours)}) but "
                    f"dataset '{spec.name}' is labelled with {len(theirs)} ({_names(theirs)}); "
                    "evaluate each checkpoint only on datasets with its own class table."
                )


def evaluate_checkpoints(
    models: Sequence[LoadedModel],
    predict: PredictFn,
    baseline_seg: LoadedModel | None = None,
    baseline_height: LoadedModel | None = None,
    split: str = "test",
    max_samples: int | None = None,
    min_height: float = 0.0,
    roots: dict[str, str] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate models (and the STL baselines) and build the Table 2 report.

    The dataset list is the union, by name, of the datasets in the checkpoints' configs;
    ``roots`` replaces the ``root`` of named datasets (data moved since training).

    Raises:
        UserError: no dataset to evaluate on, an unknown name in ``roots``, or a model
            whose class table differs from a dataset's (:func:`check_class_tables`).

    """
    everything = [*models, *(m for m in (baseline_seg, baseline_height) if m is not None)]
    specs: dict[str, DatasetConfig] = {}
    for loaded in everything:
        for spec in datasets_of(loaded):
            specs.setdefault(spec.name, spec)
    if not specs:
        raise UserError(
            "The checkpoints carry no dataset list in their config; evaluate checkpoints "
            "written by 'semimtl-geo train'."
        )
    for name, root in (roots or {}).items():
        if name not in specs:
            raise UserError(
                f"--root names dataset '{name}', but the checkpoints know only {sorted(specs)}."
            )
        specs[name].root = root
    check_class_tables(everything, list(specs.values()))
    units = {m.meta.height_unit for m in everything if "height" in m.model.tasks}
    unit = units.pop() if len(units) == 1 else "m"
    kwargs = dict(split=split, max_samples=max_samples, min_height=min_height, progress=progress)
    rows: list[ModelResult] = []
    seen: dict[str, ModelResult] = {}

    def run(loaded: LoadedModel) -> ModelResult:
        key = str(Path(loaded.path).resolve()) if loaded.path else str(id(loaded))
        if key not in seen:
            seen[key] = evaluate_model(loaded, list(specs.values()), predict, **kwargs)
        return seen[key]

    base_seg = run(baseline_seg) if baseline_seg is not None else None
    base_height = run(baseline_height) if baseline_height is not None else None
    for r in (base_seg, base_height):
        if r is not None:
            rows.append(r)
    for loaded in models:
        r = run(loaded)
        if r not in rows:
            rows.append(r)
    add_delta_m(rows, base_seg, base_height)
    notes = [
        f"Split '{split}'; AbsRel and δ over every valid reference height > 0 (the paper's "
        "definition)"
        + (
            f"; the robust tables below use references > {min_height:g} {unit} only."
            if min_height > 0
            else "."
        )
    ]
    if base_seg is None and base_height is None:
        notes.append("No STL baselines given (--baseline-seg/--baseline-height): ΔM not computed.")
    names = [n for n in specs if any(r.datasets[n].samples for r in rows)] or list(specs)
    for name in specs:
        if name not in names:
            notes.append(f"Dataset '{name}' has no '{split}' images to evaluate; left out.")
    table, quantity = paper_table(s.kind for s in specs.values())
    report = build_report(rows, names, unit, notes, table, quantity)
    return sanitize(report)
