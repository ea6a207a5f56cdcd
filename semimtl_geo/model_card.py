"""A model card other tools can read: a STAC Machine Learning Model (MLM) item.

``semimtl-geo train`` writes ``RUN_DIR/model.stac.json`` beside ``model.pt`` and
``semimtl-geo export-onnx`` writes ``<name>.stac.json`` beside its ONNX files. Each is a
STAC 1.1 Item with the MLM extension (v1.4.0, https://github.com/stac-extensions/mlm;
written with ``pystac.extensions.mlm``) that describes, from the checkpoint's metadata:

* the input: bands and their order (``bands``), tile size and layout
  (``mlm:input[0].input``), value scaling (one ``z-score`` per band on the raw pixel
  values: ``(pixel - 255 mean) / (255 std)``, the same as ``(pixel / 255 - mean) / std``)
  and the ground sampling distance (``gsd``, metres);
* the outputs: class probabilities with the class table and colours
  (``classification:classes``) and height, with its unit and the factor from model
  units to metres;
* how it was trained: the method, its hyper-parameters and the training datasets with
  the tasks labelled on each (``mlm:hyperparameters``, ``semimtl:datasets``);
* the files: the PyTorch checkpoint (role ``mlm:checkpoint``) and the ONNX files, with
  hrefs relative to the item.

:func:`resolve_checkpoint` turns an item passed where a checkpoint is expected
(``predict --checkpoint model.stac.json``) into its checkpoint asset. The item is read
as JSON data; nothing in it is executed.
"""

import datetime as dt
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from semimtl_geo.atomic import atomic_write_text
from semimtl_geo.checkpoint import ModelMeta
from semimtl_geo.errors import UserError

#: File name suffix of model cards (``model.stac.json``).
CARD_SUFFIX = ".stac.json"
#: Our own item fields (STAC allows prefixed fields beside the extensions' ones).
PREFIX = "semimtl:"
#: Media types of the model files (MLM best practices: framework and file profile).
MEDIA_TYPES = {
    "checkpoint": "application/octet-stream; framework=pytorch; profile=safetensors",
    "onnx": "application/octet-stream; framework=onnx; profile=onnx",
}
#: ``mlm:artifact_type`` of the model files (checkpoints: :mod:`semimtl_geo.checkpoint_file`).
ARTIFACT_TYPES = {"checkpoint": "safetensors", "onnx": "onnx"}
#: Description of the checkpoint asset.
CHECKPOINT_DESCRIPTION = (
    "semimtl-geo checkpoint: a safetensors file (weights) whose header holds the network "
    "config, this metadata and the training config as JSON; load it with "
    "semimtl_geo.checkpoint.load_model_checkpoint or pass it (or this card) to "
    "'semimtl-geo predict --checkpoint'."
)
#: How the ONNX graphs (``export-onnx``, for QGIS Deepness) differ from the checkpoint.
ONNX_DESCRIPTIONS = {
    "seg": "Deepness Segmentor: input pixel / 255 (the z-scores are inside the graph), "
           "output softmax class probabilities.",
    "height": "Deepness Regressor: input pixel / 255 (the z-scores are inside the graph), "
              "output height in model units clamped at 0 (x reg_output_scaling = metres).",
}
#: Asset key of the checkpoint, which :func:`resolve_checkpoint` looks for first.
CHECKPOINT_ASSET = "checkpoint"


@dataclass
class CardAsset:
    """A model file the card points to.

    Attributes:
        key: asset key in the item (``checkpoint``, ``onnx_seg``...).
        path: the file.
        kind: ``"checkpoint"`` (the file ``predict`` reads) or ``"onnx"``.
        task: for ONNX files, the task of the file (``seg`` or ``height``).
        description: what differs from the item-level ``mlm:input``/``mlm:output``.

    """

    key: str
    path: Path
    kind: str
    task: str | None = None
    description: str | None = None


def card_path(model_file: str | Path) -> Path:
    """``model.pt`` -> ``model.stac.json``; ``isprs.onnx`` -> ``isprs.stac.json``."""
    model_file = Path(model_file)
    return model_file.with_name(model_file.stem + CARD_SUFFIX)


def _href(path: Path, item_path: Path) -> str:
    """Asset href relative to the item when possible (STAC resolves it from the item)."""
    try:
        return os.path.relpath(Path(path).resolve(), Path(item_path).resolve().parent)
    except ValueError:  # another drive on Windows
        return str(Path(path).resolve())


def _method_label(config: dict[str, Any]) -> str:
    method = str(config.get("method", "unknown"))
    if method == "semimtl":
        return f"semimtl-{str(config.get('mode', 'm2')).upper()}"
    return method


def build_model_card(
    item_path: str | Path,
    model_config: dict[str, Any],
    meta: ModelMeta,
    config: dict[str, Any],
    assets: list[CardAsset],
    *,
    total_parameters: int | None = None,
    tile_size: int | None = None,
    created: dt.datetime | None = None,
) -> Any:
    """Build the STAC MLM item (a ``pystac.Item``) describing one model.

    Args:
        item_path: where the item will be written (asset hrefs are relative to it).
        model_config: ``MultiTaskNet.config()`` (encoder, bands, classes, tasks, stride).
        meta: the checkpoint's metadata (bands, scaling, GSD, classes, height scale).
        config: the resolved training config stored in the checkpoint (may be empty).
        assets: model files to list.
        total_parameters: number of generator parameters.
        tile_size: square input tile in px (default: ``meta.patch_size``).
        created: creation time (default: now, UTC).

    Returns:
        The item; ``item.to_dict()`` is its JSON.

    """
    import pystac
    from pystac.extensions.mlm import (
        AssetDetailedMLMExtension,
        Hyperparameters,
        InputStructure,
        ItemMLMExtension,
        ModelInput,
        ModelOutput,
        ProcessingExpression,
        ResultStructure,
        TaskType,
        ValueScaling,
        ValueScalingType,
    )

    item_path = Path(item_path)
    created = created or dt.datetime.now(dt.UTC).replace(microsecond=0)
    tile = int(tile_size or meta.patch_size)
    tasks = [str(t) for t in model_config.get("tasks", [])]
    encoder = str(model_config.get("encoder_name", "unknown"))
    stride = int(model_config.get("output_stride", 8))
    norm = {"group": "GroupNorm", "domain": "BatchNorm statistics per training dataset"}.get(
        str(model_config.get("norm", "batch")), "BatchNorm"
    )
    bands = [str(b) for b in meta.bands][: int(model_config.get("in_channels", len(meta.bands)))]
    num_classes = int(model_config.get("num_classes", len(meta.classes)))
    label = _method_label(config)
    model_cfg = config.get("model", {}) if isinstance(config.get("model"), dict) else {}

    item = pystac.Item(
        id=item_path.name.removesuffix(CARD_SUFFIX),
        geometry=None,
        bbox=None,
        datetime=created,
        properties={
            "title": f"semimtl-geo {label} model ({encoder})",
            "description": (
                f"Multi-task network ({', '.join(tasks)}) trained by semimtl-geo with the "
                f"{label} method across {len(config.get('data', {}).get('datasets', []))} "
                "dataset(s). Input: the listed bands in order, raw pixel values scaled by "
                "the z-scores of mlm:input; run it with 'semimtl-geo predict --checkpoint "
                "<this file>' or load the ONNX assets (QGIS Deepness)."
            ),
            "created": created.isoformat().replace("+00:00", "Z"),
        },
    )
    if meta.gsd is not None:
        item.common_metadata.gsd = float(meta.gsd)
    # STAC 1.1 core band objects, in model input order: MLM wants them in the item's
    # properties; STAC 1.1 allows them there only when assets carry bands too (below).
    band_objects = [{"name": b} for b in bands]
    item.properties["bands"] = band_objects
    scaling = [
        ValueScaling.create(ValueScalingType.Z_SCORE, mean=round(255.0 * m, 6),
                            stddev=round(255.0 * s, 6))
        for m, s in zip(meta.mean, meta.std)
    ]
    model_input = ModelInput.create(
        name="image",
        bands=bands,
        input=InputStructure.create(
            shape=[-1, len(bands), tile, tile],
            dim_order=["batch", "channel", "height", "width"],
            data_type="float32",
        ),
        description=(
            f"{len(bands)} bands ({', '.join(bands)}) as float32, {tile} x {tile} px tiles "
            f"at the training GSD; raw pixel values (uint8 0-255) standardised per band."
        ),
    )
    # pystac types value_scaling as one object; MLM v1.4 wants a list (one per band).
    model_input.properties["value_scaling"] = [v.to_dict() for v in scaling]

    outputs = []
    mlm_tasks = []
    if "seg" in tasks:
        mlm_tasks.append(TaskType.SEMANTIC_SEGMENTATION)
        seg = ModelOutput.create(
            name="class_probabilities",
            tasks=[TaskType.SEMANTIC_SEGMENTATION],
            result=ResultStructure.create(
                shape=[-1, num_classes, tile, tile],
                dim_order=["batch", "channel", "height", "width"],
                data_type="float32",
            ),
            description=(
                "Class logits; softmax gives probabilities, their arg-max the class id "
                "(semimtl-geo predict writes the class raster, nodata 255)."
            ),
            post_processing_function=ProcessingExpression.create(
                "python", "torch.softmax(output, dim=1)"),
        )
        seg.properties["classification:classes"] = [
            {"value": i, "name": name, "description": name.replace("_", " "),
             "color_hint": "{:02X}{:02X}{:02X}".format(*color)}
            for i, (name, color) in enumerate(zip(meta.classes.names, meta.classes.colors))
        ]
        outputs.append(seg)
    if "height" in tasks:
        mlm_tasks.append(TaskType.REGRESSION)
        height = ModelOutput.create(
            name="height",
            tasks=[TaskType.REGRESSION],
            result=ResultStructure.create(
                shape=[-1, 1, tile, tile],
                dim_order=["batch", "channel", "height", "width"],
                data_type="float32",
            ),
            description=(
                f"Height above ground in normalised nDSM units; {meta.height_unit} = "
                f"output x {float(meta.height_scale):g}."
            ),
            post_processing_function=ProcessingExpression.create(
                "python", f"output * {float(meta.height_scale)!r}"),
        )
        height.properties[PREFIX + "unit"] = meta.height_unit
        height.properties[PREFIX + "scale"] = float(meta.height_scale)
        outputs.append(height)

    hyper: dict[str, Any] = {"method": config.get("method"), "mode": config.get("mode")}
    for section in ("loss", "optim"):
        for key, value in (config.get(section) or {}).items():
            hyper[f"{section}.{key}"] = value
    data_cfg = config.get("data") or {}
    for key in ("crop_size", "batch_size"):
        if key in data_cfg:
            hyper[f"data.{key}"] = data_cfg[key]
    if "trainer" in config:
        hyper["trainer.max_steps"] = config["trainer"].get("max_steps")
    hyper = {k: v for k, v in hyper.items() if v is not None}

    weights = model_cfg.get("encoder_weights")
    ItemMLMExtension.ext(item, add_if_missing=True).apply(
        name=f"semimtl-geo {label} {encoder}",
        architecture=(
            f"{encoder} encoder (output stride {stride}, {norm}) with a PSP segmentation head "
            + ("fusing the 1/4-resolution features (DeepLabV3+-style decoder) "
               if model_config.get("seg_skip") else "")
            + "and a height head (SemiMTL, Wang et al., WACV 2022)"
        ),
        tasks=mlm_tasks,
        input=[model_input],
        output=outputs,
        framework="pytorch",
        framework_version=_torch_version(),
        total_parameters=total_parameters,
        pretrained=bool(weights),
        pretrained_source=str(weights) if weights else None,
        batch_size_suggestion=int(config.get("eval", {}).get("batch_size", 4) or 4),
        hyperparameters=Hyperparameters.create(**hyper) if hyper else None,
    )
    item.properties[PREFIX + "method"] = label
    item.properties[PREFIX + "datasets"] = [
        {"name": d.get("name"), "kind": d.get("kind"), "tasks": list(d.get("tasks", [])),
         "root": d.get("root")}
        for d in data_cfg.get("datasets", [])
    ]
    item.properties[PREFIX + "tile_size"] = tile
    item.properties[PREFIX + "overlap"] = float(meta.overlap)
    item.properties[PREFIX + "ignore_index"] = int(meta.ignore_index)

    for asset in assets:
        stac_asset = pystac.Asset(
            href=_href(asset.path, item_path),
            title=asset.path.name,
            description=asset.description,
            media_type=MEDIA_TYPES[asset.kind],
            roles=["mlm:model", "mlm:weights"]
            + (["mlm:checkpoint"] if asset.kind == "checkpoint" else []),
        )
        stac_asset.extra_fields["bands"] = list(band_objects)
        item.add_asset(asset.key, stac_asset)
        AssetDetailedMLMExtension.ext(stac_asset, add_if_missing=True).artifact_type = (
            ARTIFACT_TYPES[asset.kind]
        )
        if asset.task:
            stac_asset.extra_fields[PREFIX + "task"] = asset.task
    return item


def _torch_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("torch")
    except Exception:  # not installed as a distribution
        return None


def write_model_card(path: str | Path, item: Any) -> Path:
    """Write the item's JSON atomically (hrefs stay as built: relative to ``path``)."""
    data = item.to_dict(include_self_link=False, transform_hrefs=False)
    return atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def resolve_checkpoint(path: str | Path) -> Path:
    """Return the checkpoint to load for ``path``: itself, or a model card's checkpoint asset.

    ``predict`` runs PyTorch checkpoints; an item's ONNX assets are for other runtimes
    (QGIS Deepness), so a card is resolved to its ``mlm:checkpoint`` asset.

    Raises:
        UserError: an unreadable card, or one without a checkpoint asset.

    """
    path = Path(path)
    if path.suffix.lower() == ".onnx":
        cards = sorted(path.parent.glob(f"*{CARD_SUFFIX}"))
        hint = f"pass its model card '{cards[0]}' or" if cards else "pass"
        raise UserError(
            f"'{path.name}' is an ONNX file; predict runs PyTorch checkpoints: {hint} the "
            "checkpoint it was exported from (ONNX files are for QGIS Deepness)."
        )
    if not path.name.endswith(".json"):
        return path
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(
            f"Model card '{path}' could not be read as JSON ({type(exc).__name__}); pass a "
            "*.stac.json written by semimtl-geo or a checkpoint file."
        ) from None
    assets = data.get("assets") if isinstance(data, dict) else None
    if not isinstance(assets, dict):
        raise UserError(
            f"'{path}' is not a STAC item with assets; pass a *.stac.json written by "
            "semimtl-geo or a checkpoint file."
        )

    def is_checkpoint(asset: Any) -> bool:
        return isinstance(asset, dict) and (
            "mlm:checkpoint" in (asset.get("roles") or [])
            or asset.get("mlm:artifact_type") == ARTIFACT_TYPES["checkpoint"]
        )

    ordered = [assets.get(CHECKPOINT_ASSET)] + [a for k, a in assets.items()
                                                 if k != CHECKPOINT_ASSET]
    chosen = next((a for a in ordered if is_checkpoint(a) and a.get("href")), None)
    if chosen is None:
        onnx = [k for k, a in assets.items()
                if isinstance(a, dict) and a.get("mlm:artifact_type") == "onnx"]
        extra = f" (it lists only ONNX files: {', '.join(onnx)})" if onnx else ""
        raise UserError(
            f"Model card '{path}' has no PyTorch checkpoint asset{extra}; predict runs "
            "checkpoints: pass the model.pt the ONNX files were exported from."
        )
    href = str(chosen["href"])
    if "://" in href and not href.startswith("file://"):
        raise UserError(
            f"Model card '{path}' points to a remote checkpoint ({href}); download it and "
            "pass the local file."
        )
    target = Path(href.removeprefix("file://"))
    if not target.is_absolute():
        target = path.parent / target
    if not target.is_file():
        raise UserError(
            f"Model card '{path}' points to the checkpoint '{target}', which does not exist; "
            "keep the card beside its model files or pass the checkpoint itself."
        )
    return target


def write_checkpoint_card(
    checkpoint: str | Path,
    model: Any,
    meta: ModelMeta,
    config: dict[str, Any],
    onnx_files: dict[str, Path] | None = None,
    card: str | Path | None = None,
    tile_size: int | None = None,
) -> Path:
    """Write the model card of a checkpoint (and of ONNX files exported from it).

    Args:
        checkpoint: the checkpoint file (listed as the ``checkpoint`` asset).
        model: the :class:`~semimtl_geo.models.MultiTaskNet` it holds.
        meta: its metadata.
        config: its training config.
        onnx_files: task -> ONNX file, listed as ``onnx_<task>`` assets.
        card: where to write (default: :func:`card_path` of the checkpoint).
        tile_size: the input tile the files take (default: ``meta.patch_size``).

    Returns:
        The written card.

    """
    checkpoint = Path(checkpoint)
    card = Path(card) if card is not None else card_path(checkpoint)
    assets = [CardAsset(CHECKPOINT_ASSET, checkpoint, "checkpoint",
                        description=CHECKPOINT_DESCRIPTION)]
    assets += [CardAsset(f"onnx_{task}", Path(path), "onnx", task, ONNX_DESCRIPTIONS.get(task))
               for task, path in (onnx_files or {}).items()]
    item = build_model_card(
        card, model.config(), meta, config, assets,
        total_parameters=sum(p.numel() for p in model.parameters()), tile_size=tile_size,
    )
    return write_model_card(card, item)
