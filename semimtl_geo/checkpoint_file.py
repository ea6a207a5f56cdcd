"""The checkpoint file format: nested plain data and tensors, with no code in it.

Every checkpoint semimtl-geo writes (``model.pt`` and Lightning's ``checkpoints/last.ckpt``)
is one `safetensors <https://huggingface.co/docs/safetensors>`_ file:

* the tensors, as raw little-endian bytes under path-like names
  (``semimtl_geo/state_dict/encoder.conv1.weight``), readable by any safetensors tool;
* the header's string metadata ``format`` (:data:`FILE_FORMAT`), ``version``
  (:data:`FILE_VERSION`) and ``tree``: the nested structure as JSON, in which a tensor is
  ``{"__tensor__": name}``, a tuple ``{"__tuple__": [...]}``, a dict whose keys are not
  all strings ``{"__items__": [[key, value], ...]}`` and a non-finite float
  ``{"__float__": "nan" | "inf" | "-inf"}``.

Reading a file parses a JSON header and copies tensor bytes; nothing is unpickled and no
Python object named by the file is ever looked up or built, so opening a checkpoint, even
one crafted by an attacker, cannot run code from it. ``torch.load`` cannot promise that:
its pickle format calls whatever the file names, and its restricted ``weights_only`` mode
is a pickle interpreter whose bugs have allowed code execution (CVE-2025-32434 before
torch 2.6, CVE-2026-24747 before 2.10). Pickled torch files (what semimtl-geo wrote before
this format) are recognised and refused with one sentence pointing to
``semimtl-geo convert-checkpoint``.
"""

import json
import math
import shlex
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from semimtl_geo.atomic import atomic_output
from semimtl_geo.errors import UserError

#: Value of the ``format`` metadata entry that marks a semimtl-geo checkpoint.
FILE_FORMAT = "semimtl-geo/checkpoint"
#: Version of the container layout (the payload inside has its own ``format`` number).
FILE_VERSION = 1

_TENSOR, _TUPLE, _ITEMS, _FLOAT = "__tensor__", "__tuple__", "__items__", "__float__"
_MARKERS = (_TENSOR, _TUPLE, _ITEMS, _FLOAT)
#: safetensors refuses headers above 100 MB; a real header is a few hundred kB.
_MAX_HEADER = 100_000_000


class CheckpointFileError(UserError):
    """A checkpoint file that cannot be opened (missing, foreign, damaged or pickled)."""


class PickledCheckpointError(CheckpointFileError):
    """A ``torch.save`` (pickle) file: refused, because unpickling can run code."""


def convert_hint(path: str | Path) -> str:
    """Return the command that rewrites a trusted pickled checkpoint safely, in place."""
    quoted = shlex.quote(str(path))
    return f"semimtl-geo convert-checkpoint {quoted} -o {quoted} --overwrite"


# ------------------------------------------------------------------ what a file is


def sniff(path: str | Path) -> str:
    """Say what kind of file ``path`` is without parsing more than its first bytes.

    Returns:
        ``"safetensors"`` (a safetensors header; maybe ours), ``"pickle"`` (a
        ``torch.save`` zip archive or a bare pickle stream) or ``"other"``.

    """
    path = Path(path)
    with path.open("rb") as fh:
        head = fh.read(9)
    size = path.stat().st_size
    if len(head) == 9:
        (n,) = struct.unpack("<Q", head[:8])
        if 2 <= n <= min(_MAX_HEADER, size - 8) and head[8:9] == b"{":
            return "safetensors"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:  # pickle PROTO opcode
        return "pickle"
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as zf:
                if any(name.endswith("data.pkl") for name in zf.namelist()):
                    return "pickle"
        except (zipfile.BadZipFile, OSError):
            return "other"
    return "other"


# ------------------------------------------------------------------ writing


class _Encoder:
    """Turn nested plain data + tensors into a JSON tree and a flat ``{name: tensor}``.

    Views of the same storage with the same layout (the generator weights Lightning's
    ``state_dict`` and our payload both hold) are stored once, as ``torch.save`` does.
    """

    def __init__(self) -> None:
        self.tensors: dict[str, torch.Tensor] = {}
        self._views: dict[tuple, str] = {}
        self._storages: set[int] = set()

    def tensor(self, t: torch.Tensor, path: str) -> str:
        t = t.detach()
        if t.layout != torch.strided:
            raise TypeError(f"checkpoint entry '{path}' is a {t.layout} tensor; store it dense")
        view = (
            t.device, t.untyped_storage().data_ptr(), t.storage_offset(),
            tuple(t.shape), t.stride(), t.dtype,
        )
        if t.numel() and view in self._views:
            return self._views[view]
        name = path or "tensor"
        suffix = 1
        while name in self.tensors:
            suffix += 1
            name = f"{path}#{suffix}"
        out = t.to("cpu").contiguous()
        ptr = out.untyped_storage().data_ptr()
        if out.numel() and ptr in self._storages:
            out = out.clone()  # another view of a stored buffer: safetensors wants it unshared
            ptr = out.untyped_storage().data_ptr()
        if out.numel():
            self._storages.add(ptr)
            self._views[view] = name
        self.tensors[name] = out
        return name

    def encode(self, obj: Any, path: str = "") -> Any:
        if obj is None or isinstance(obj, (bool, str, int)):
            return obj
        if isinstance(obj, float):
            return obj if math.isfinite(obj) else {_FLOAT: repr(obj)}
        if isinstance(obj, torch.Tensor):
            return {_TENSOR: self.tensor(obj, path)}
        if isinstance(obj, tuple):
            return {_TUPLE: [self.encode(v, f"{path}/{i}") for i, v in enumerate(obj)]}
        if isinstance(obj, list):
            return [self.encode(v, f"{path}/{i}") for i, v in enumerate(obj)]
        if isinstance(obj, dict):
            def child(k: Any) -> str:
                return f"{path}/{k}" if path else str(k)

            if all(isinstance(k, str) and not k.startswith("__") for k in obj):
                return {k: self.encode(v, child(k)) for k, v in obj.items()}
            return {
                _ITEMS: [[self.encode(k, "key"), self.encode(v, child(k))] for k, v in obj.items()]
            }
        raise TypeError(
            f"checkpoint entry '{path}' is a {type(obj).__qualname__}; only dicts, lists, "
            "tuples, str, int, float, bool, None and tensors can be stored"
        )


def _write(obj: dict[str, Any], path: Path) -> None:
    if not isinstance(obj, dict):
        raise TypeError(f"a checkpoint is a dict, not a {type(obj).__qualname__}")
    encoder = _Encoder()
    tree = encoder.encode(obj)
    metadata = {
        "format": FILE_FORMAT,
        "version": str(FILE_VERSION),
        "tree": json.dumps(tree, separators=(",", ":"), allow_nan=False),
    }
    save_file(encoder.tensors, str(path), metadata=metadata)


def write_checkpoint_file(
    obj: dict[str, Any], path: str | Path, verify: Callable[[Path], None] | None = None
) -> Path:
    """Write ``obj`` (nested plain data and tensors) atomically in the code-free format.

    Args:
        obj: the checkpoint dict.
        path: destination; a temporary file beside it is renamed over it at the end.
        verify: called with the temporary file before the rename; an exception it raises
            leaves ``path`` untouched.

    Raises:
        TypeError: ``obj`` holds something other than plain data and tensors.

    """
    with atomic_output(path) as tmp:
        _write(obj, tmp)
        if verify is not None:
            verify(tmp)
    return Path(path)


# ------------------------------------------------------------------ reading


class _Malformed(ValueError):
    """The JSON tree does not follow the layout described in the module docstring."""


def _decode(node: Any, tensor: Callable[[str], torch.Tensor]) -> Any:
    if node is None or isinstance(node, (bool, str, int, float)):
        return node
    if isinstance(node, list):
        return [_decode(v, tensor) for v in node]
    if not isinstance(node, dict):
        raise _Malformed(f"unexpected JSON value {type(node).__name__}")
    marked = [k for k in node if k.startswith("__")]
    if not marked:
        return {k: _decode(v, tensor) for k, v in node.items()}
    if len(node) != 1 or marked[0] not in _MARKERS:
        raise _Malformed(f"unknown entry '{marked[0]}'")
    kind, value = marked[0], node[marked[0]]
    if kind == _TENSOR:
        if not isinstance(value, str):
            raise _Malformed("a tensor reference is not a name")
        return tensor(value)
    if kind == _FLOAT:
        if value not in ("nan", "inf", "-inf"):
            raise _Malformed(f"'{value}' is not a non-finite float")
        return float(value)
    if not isinstance(value, list):
        raise _Malformed(f"'{kind}' does not hold a list")
    if kind == _TUPLE:
        return tuple(_decode(v, tensor) for v in value)
    out = {}
    for item in value:
        if not isinstance(item, list) or len(item) != 2:
            raise _Malformed("a dict item is not a [key, value] pair")
        key = _decode(item[0], tensor)
        if not isinstance(key, (str, int, float, bool, tuple)) and key is not None:
            raise _Malformed(f"a dict key is a {type(key).__name__}")
        try:
            out[key] = _decode(item[1], tensor)
        except TypeError:  # a tuple key holding a list
            raise _Malformed("a dict key is not hashable") from None
    return out


def read_checkpoint_file(
    path: str | Path, device: str | torch.device = "cpu", key: str | None = None
) -> Any:
    """Open a checkpoint written by :func:`write_checkpoint_file`, without running any code.

    Args:
        path: the file.
        device: where the tensors are created.
        key: decode only this top-level entry (and read only its tensors); ``None`` when the
            file has no such entry.

    Raises:
        CheckpointFileError: missing, foreign or damaged files, with one sentence.
        PickledCheckpointError: a ``torch.save`` file, refused because unpickling can run
            code; the sentence names :func:`convert_hint`'s command.

    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointFileError(
            f"Checkpoint '{path}' does not exist; pass the .ckpt/.pt file written by "
            "'semimtl-geo train'."
        )
    try:
        kind = sniff(path)
    except OSError as exc:
        raise CheckpointFileError(
            f"Checkpoint '{path}' could not be read ({exc.strerror or type(exc).__name__}); "
            "check the path and its permissions."
        ) from None
    if kind == "pickle":
        raise PickledCheckpointError(
            f"Checkpoint '{path}' is a pickled torch file (the format of earlier semimtl-geo "
            "versions and of other tools), which is not opened because unpickling can run "
            f"code hidden in it; only if you trust its source, convert it once with "
            f"'{convert_hint(path)}'."
        )
    if kind != "safetensors":
        raise CheckpointFileError(
            f"Checkpoint '{path}' could not be read (not a checkpoint file); it is corrupt or "
            "was not written by semimtl-geo."
        )
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as fh:
            metadata = fh.metadata() or {}
            names = set(fh.keys())
            if metadata.get("format") != FILE_FORMAT:
                raise CheckpointFileError(
                    f"Checkpoint '{path}' is a safetensors file without semimtl-geo's "
                    "metadata; pass a checkpoint written by 'semimtl-geo train'."
                )
            version = metadata.get("version", "")
            if not version.isdigit() or int(version) > FILE_VERSION:
                raise CheckpointFileError(
                    f"Checkpoint '{path}' uses checkpoint file version '{version}', which "
                    f"this semimtl-geo (reads version {FILE_VERSION}) does not know; "
                    "upgrade semimtl-geo."
                )

            def tensor(name: str) -> torch.Tensor:
                if name not in names:
                    raise _Malformed(f"tensor '{name}' is missing")
                # on the CPU safetensors hands out views of a memory map of the file: copy,
                # so the tensors stay valid (and the file replaceable) whatever happens to it
                t = fh.get_tensor(name)
                return t.clone() if t.device.type == "cpu" else t

            tree = json.loads(metadata.get("tree", "null"))
            if key is not None:
                if not isinstance(tree, dict) or key not in tree:
                    return None
                return _decode(tree[key], tensor)
            return _decode(tree, tensor)
    except CheckpointFileError:
        raise
    except (_Malformed, ValueError, RecursionError) as exc:
        detail = str(exc) if isinstance(exc, _Malformed) else type(exc).__name__
        raise CheckpointFileError(
            f"Checkpoint '{path}' is damaged ({detail}); use an intact copy of the file."
        ) from None
    except Exception as exc:  # safetensors' own errors: truncated file, bad header
        raise CheckpointFileError(
            f"Checkpoint '{path}' could not be read ({type(exc).__name__}); it is corrupt or "
            "was not written by semimtl-geo."
        ) from None
