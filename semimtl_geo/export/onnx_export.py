"""Export a checkpoint to ONNX files the QGIS Deepness plugin can load, and check them.

One file per task (Deepness takes one output layer per model): a *Segmentor* with
softmax class probabilities and a *Regressor* with height. Each graph takes
``N x C x T x T`` pixels scaled to ``[0, 1]`` and carries our normalisation
(:mod:`semimtl_geo.export.graph`) and the plugin's metadata
(:mod:`semimtl_geo.export.deepness`). Every file is run with onnxruntime against the
PyTorch model on the same input before it is written; the maximum absolute difference
is returned. A STAC MLM model card listing the checkpoint and the ONNX files is written
beside them (``<name>.stac.json``, :mod:`semimtl_geo.model_card`).
"""

import copy
import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from semimtl_geo.atomic import atomic_output
from semimtl_geo.checkpoint import LoadedModel, load_model_checkpoint
from semimtl_geo.errors import UserError
from semimtl_geo.export.deepness import MODEL_TYPES, deepness_metadata, encode_metadata
from semimtl_geo.export.graph import TaskGraph, freeze_adaptive_pools
from semimtl_geo.model_card import card_path, write_checkpoint_card
from semimtl_geo.models.multitask import normalise_tasks
from semimtl_geo.outputs import check_output_file

#: ONNX opset of the exported graphs (onnxruntime >= 1.12 and Deepness's runtime read it).
DEFAULT_OPSET = 17

#: Oldest opset the graphs export to (bilinear ``Resize`` as PyTorch computes it).
MIN_OPSET = 11

OUTPUT_NAMES = {"seg": "probabilities", "height": "height"}


def max_opset() -> int:
    """Newest ONNX opset this PyTorch exports."""
    try:
        from torch.onnx._constants import ONNX_MAX_OPSET
    except ImportError:  # a private module; fall back to a version every torch >= 2.1 has
        return 18
    return int(ONNX_MAX_OPSET)

# Parity limits: probabilities are in [0, 1]; height is compared relative to its range.
_SEG_ATOL = 1e-4
_HEIGHT_RTOL = 1e-3


@dataclass
class ExportedTask:
    """One ONNX file written by :func:`export_onnx`."""

    task: str
    path: Path
    model_type: str
    tile_size: int
    max_abs_diff: float
    metadata: dict[str, Any] = field(default_factory=dict)


def output_paths(out: str | Path, tasks: Sequence[str]) -> dict[str, Path]:
    """File per task: ``out`` itself for one task, ``<stem>_<task>.onnx`` for several."""
    out = Path(out)
    if len(tasks) == 1:
        return {tasks[0]: out}
    suffix = out.suffix or ".onnx"
    return {t: out.with_name(f"{out.stem}_{t}{suffix}") for t in tasks}


def _check_import() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        raise UserError(
            "ONNX export needs the 'onnx' and 'onnxruntime' packages; "
            "install them with: pip install 'semimtl-geo[onnx]'."
        ) from None


def _to_onnx_bytes(
    graph: TaskGraph, example: torch.Tensor, opset: int, dynamic_batch: bool
) -> bytes:
    out_name = OUTPUT_NAMES[graph.task]
    dynamic_axes = {"input": {0: "batch"}, out_name: {0: "batch"}} if dynamic_batch else None
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of the dynamo one, which needs
        # the extra 'onnxscript' package; the traced graph of these static CNNs is the same.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph,
            (example,),
            buffer,
            input_names=["input"],
            output_names=[out_name],
            opset_version=opset,
            dynamic_axes=dynamic_axes,
            do_constant_folding=True,
            dynamo=False,
        )
    return buffer.getvalue()


def _run_onnxruntime(model_bytes: bytes, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _write_atomic(data: bytes, path: Path) -> None:
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)


def export_task(
    loaded: LoadedModel,
    task: str,
    path: str | Path,
    tile_size: int,
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = False,
    seed: int = 0,
) -> ExportedTask:
    """Export one task of a loaded model to ``path`` and verify it with onnxruntime.

    Raises:
        RuntimeError: onnxruntime and PyTorch disagree beyond the parity limit (the file
            is then not written).

    """
    import onnx

    model = loaded.model.eval()
    bands = model.in_channels
    reference = TaskGraph(model, task, loaded.meta.mean, loaded.meta.std).eval()
    graph = TaskGraph(copy.deepcopy(model), task, loaded.meta.mean, loaded.meta.std).eval()
    example = torch.zeros(1, bands, tile_size, tile_size)
    freeze_adaptive_pools(graph, example)

    proto = onnx.load_from_string(_to_onnx_bytes(graph, example, opset, dynamic_batch))
    values = deepness_metadata(loaded.meta, task, tile_size, bands)
    for key, value in encode_metadata(values).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "semimtl-geo"
    proto.doc_string = (
        f"semimtl-geo {MODEL_TYPES[task]} ({task}); input: {bands} bands "
        f"{', '.join(loaded.meta.bands)} as uint8/255, {tile_size}x{tile_size} px."
    )
    onnx.checker.check_model(proto)
    data = proto.SerializeToString()

    # Parity on Deepness-like input: random uint8 pixels / 255 (two tiles if batch is dynamic).
    rng = np.random.default_rng(seed)
    batch = 2 if dynamic_batch else 1
    pixels = rng.integers(0, 256, size=(batch, bands, tile_size, tile_size), dtype=np.uint8)
    x = (pixels.astype(np.float32) / 255.0).astype(np.float32)
    with torch.no_grad():
        expected = reference(torch.from_numpy(x)).numpy()
    got = _run_onnxruntime(data, x)
    diff = float(np.max(np.abs(got.astype(np.float64) - expected.astype(np.float64))))
    limit = _SEG_ATOL if task == "seg" else _HEIGHT_RTOL * max(1.0, float(np.abs(expected).max()))
    if got.shape != expected.shape or not diff <= limit:
        raise RuntimeError(
            f"ONNX export of '{task}' does not match PyTorch (max abs diff {diff:.3g} > "
            f"{limit:.3g}, shapes {got.shape} vs {expected.shape}); the file was not written."
        )
    path = Path(path)
    _write_atomic(data, path)
    return ExportedTask(task, path, MODEL_TYPES[task], tile_size, diff, values)


def export_onnx(
    checkpoint: str | Path,
    out: str | Path,
    *,
    tasks: str | Sequence[str] | None = None,
    tile_size: int | None = None,
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = False,
    domain: str | None = None,
) -> list[ExportedTask]:
    """Write Deepness-compatible ONNX files for a semimtl-geo checkpoint.

    Args:
        checkpoint: a checkpoint from ``semimtl-geo train`` (or ``save_model_checkpoint``).
        out: ``model.onnx``; with two tasks the files are ``model_seg.onnx`` and
            ``model_height.onnx`` (see :func:`output_paths`); the model card is
            ``model.stac.json``.
        tasks: subset of the model's tasks (default: all its heads).
        tile_size: square tile the graph takes (default: the checkpoint's patch size).
        opset: ONNX opset version.
        dynamic_batch: export a dynamic batch dimension; the default, batch 1, is what every
            Deepness version accepts (older Regressor checks reject other batch sizes).
        domain: for a ``model.norm=domain`` model, the training dataset whose
            normalisation statistics the graphs bake in (default: the first).

    Returns:
        One :class:`ExportedTask` per file, with the onnxruntime-vs-PyTorch max abs diff.

    Raises:
        UserError: unreadable checkpoint, unknown task, bad tile size, missing onnx packages.

    """
    _check_import()
    if not MIN_OPSET <= opset <= max_opset():
        raise UserError(
            f"ONNX opset {opset} is not supported; pass --opset between {MIN_OPSET} and "
            f"{max_opset()} (default {DEFAULT_OPSET})."
        )
    loaded = load_model_checkpoint(checkpoint, domain=domain)
    available = tuple(loaded.model.tasks)
    wanted = normalise_tasks(tasks) if tasks is not None else available
    missing = [t for t in wanted if t not in available]
    if missing:
        raise UserError(
            f"The checkpoint has no {', '.join(missing)} head "
            f"(it predicts {', '.join(available)}); "
            f"pass --tasks with a subset of {','.join(available)}."
        )
    tile = int(tile_size if tile_size is not None else loaded.meta.patch_size)
    if tile < 32:
        raise UserError(
            f"Tile size {tile} px is too small for the network; pass --tile-size 32 or more."
        )
    paths = output_paths(out, wanted)
    for path in paths.values():
        check_output_file(path, "ONNX file")
    torch.manual_seed(0)
    exported = [
        export_task(loaded, task, path, tile, opset=opset, dynamic_batch=dynamic_batch)
        for task, path in paths.items()
    ]
    write_checkpoint_card(
        checkpoint, loaded.model, loaded.meta, loaded.config,
        onnx_files={item.task: item.path for item in exported}, card=card_path(out),
        tile_size=tile,
    )
    return exported
