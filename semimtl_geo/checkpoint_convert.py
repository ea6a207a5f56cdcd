"""Rewrite a pickled torch checkpoint (earlier semimtl-geo versions) in the code-free format.

This is the one place where semimtl-geo reads a pickle, and only when a user asks for it
with ``semimtl-geo convert-checkpoint``. By default the file goes through torch's
restricted ``weights_only`` unpickler, which builds only tensors and plain containers and
is enough for every checkpoint semimtl-geo ever wrote; a file that names any other Python
object is refused unless ``unrestricted=True``, which runs the full pickle machinery and
therefore any code the file holds. Either way the input must come from a trusted source:
the restricted unpickler has itself had code-execution bugs (see
:mod:`semimtl_geo.checkpoint_file`).

The converted content is reduced to plain data (numpy values become Python numbers or
tensors, paths become strings), written with
:func:`~semimtl_geo.checkpoint_file.write_checkpoint_file` and opened again with
:func:`~semimtl_geo.checkpoint.load_model_checkpoint` before it replaces the output.
Lightning's training state is kept, so a converted ``last.ckpt`` still resumes.
"""

import pickle
import re
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

import numpy as np
import torch

from semimtl_geo.checkpoint import CHECKPOINT_KEY, load_model_checkpoint
from semimtl_geo.checkpoint_file import sniff, write_checkpoint_file
from semimtl_geo.errors import UserError
from semimtl_geo.outputs import check_output_file

#: Printed by the CLI before anything is read.
TRUST_WARNING = (
    "Warning: convert-checkpoint unpickles the input file, and a pickle can run code; "
    "convert only files from a source you trust."
)

_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


@dataclass
class ConvertResult:
    """What :func:`convert_checkpoint` wrote."""

    path: Path
    tensors: int
    training_state: bool


def _plain(obj: Any, where: str, src: Path) -> Any:
    """Reduce ``obj`` to what the code-free format stores, or say what cannot be."""
    if obj is None or isinstance(obj, (bool, int, float, str, torch.Tensor)):
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, PurePath):
        return str(obj)
    if isinstance(obj, (list, set, frozenset)):
        return [_plain(v, f"{where}/{i}", src) for i, v in enumerate(obj)]
    if isinstance(obj, tuple):
        return tuple(_plain(v, f"{where}/{i}", src) for i, v in enumerate(obj))
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            key = _plain(k, f"{where}/{k}", src)
            out[tuple(key) if isinstance(key, list) else key] = _plain(v, f"{where}/{k}", src)
        return out
    raise UserError(
        f"Checkpoint '{src}' holds a {type(obj).__module__}.{type(obj).__qualname__} at "
        f"'{where or '/'}', which has no plain-data form, so it cannot be converted."
    )


def _unpickle(src: Path, unrestricted: bool) -> Any:
    try:
        return torch.load(src, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if not unrestricted:
            found = _GLOBAL.search(str(exc))
            what = f"the Python object '{found.group(1)}'" if found else "Python objects"
            raise UserError(
                f"Checkpoint '{src}' names {what}, beyond tensors and plain data, so it was "
                "not converted; add --unrestricted only if you trust the file's source, "
                "because that runs any code it holds."
            ) from None
    except Exception as exc:
        raise UserError(
            f"Checkpoint '{src}' could not be read as a torch file ({type(exc).__name__}); "
            "it is corrupt."
        ) from None
    try:
        return torch.load(src, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise UserError(
            f"Checkpoint '{src}' could not be unpickled ({type(exc).__name__}); it is corrupt "
            "or needs code that is not installed here."
        ) from None


def convert_checkpoint(
    src: str | Path, dst: str | Path, overwrite: bool = False, unrestricted: bool = False
) -> ConvertResult:
    """Convert a pickled semimtl-geo checkpoint (``model.pt`` or ``last.ckpt``) to the safe format.

    Args:
        src: the pickled file; it must come from a trusted source.
        dst: output path; may equal ``src`` (replaced atomically) with ``overwrite``.
        overwrite: replace an existing ``dst``.
        unrestricted: allow the full unpickler, which runs any code in ``src``.

    Raises:
        UserError: missing, already converted, foreign, unreadable or unconvertible files.

    """
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise UserError(f"Checkpoint '{src}' does not exist; pass the file to convert.")
    if dst.exists() and not overwrite:
        raise UserError(f"'{dst}' already exists; pass --overwrite or choose another -o path.")
    check_output_file(dst, "Converted checkpoint")
    kind = sniff(src)
    if kind == "safetensors":
        raise UserError(
            f"Checkpoint '{src}' is already in the safe format; use it as it is."
        )
    if kind != "pickle":
        raise UserError(
            f"'{src}' is not a torch checkpoint file; pass a .pt/.ckpt written by an earlier "
            "semimtl-geo."
        )
    raw = _unpickle(src, unrestricted)
    if not isinstance(raw, dict) or not isinstance(raw.get(CHECKPOINT_KEY), dict):
        raise UserError(
            f"Checkpoint '{src}' was not written by semimtl-geo (no '{CHECKPOINT_KEY}' entry), "
            "so there is nothing to convert."
        )
    plain = _plain(raw, "", src)

    def verify(tmp: Path) -> None:
        try:
            load_model_checkpoint(tmp)
        except UserError as exc:  # name the user's file, not the temporary one
            raise UserError(str(exc).replace(str(tmp), str(src))) from None

    try:
        write_checkpoint_file(plain, dst, verify=verify)
    except TypeError as exc:
        raise UserError(f"Checkpoint '{src}' cannot be converted ({exc}).") from None
    tensors = _count_tensors(plain)
    return ConvertResult(dst, tensors, "optimizer_states" in plain)


def _count_tensors(obj: Any) -> int:
    if isinstance(obj, torch.Tensor):
        return 1
    if isinstance(obj, dict):
        return sum(_count_tensors(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_count_tensors(v) for v in obj)
    return 0
