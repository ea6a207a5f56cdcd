"""Write files under a temporary name in the target folder, then rename (never half-written).

The one implementation of the temporary-name-then-rename pattern: single files
(:func:`atomic_output`, :func:`atomic_write_text`, :func:`atomic_write_json`), several
files committed together (:func:`atomic_outputs`) and whole folders (:func:`atomic_dir`).
``tempfile.mkstemp``/``mkdtemp`` create private 0600/0700 entries; outputs get the
permissions a plainly created file or folder would have (``0666``/``0777 & ~umask``)
before they are renamed into place.
"""

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from semimtl_geo.outputs import is_write_error, write_error


def umask_mode(directory: bool = False) -> int:
    """Return the permissions a plainly created file (or folder) gets under the umask."""
    mask = os.umask(0)
    os.umask(mask)
    return (0o777 if directory else 0o666) & ~mask


@contextlib.contextmanager
def atomic_output(path: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it over ``path``.

    On any exception (Ctrl-C included) the temporary file is removed and ``path`` is left
    as it was. A write that fails because of the location (disk full, read-only...)
    raises a one-sentence :class:`~semimtl_geo.errors.UserError`.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    except OSError as exc:
        if is_write_error(exc):
            raise write_error(path, exc) from None
        raise
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, umask_mode())
        os.replace(tmp, path)
    except OSError as exc:
        if is_write_error(exc):
            raise write_error(path, exc) from None
        raise
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str, suffix: str = ".tmp") -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_output(path, suffix) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def atomic_write_json(path: str | Path, data: Any, indent: int = 2) -> Path:
    """Write ``data`` as JSON to ``path`` atomically (with a final newline)."""
    return atomic_write_text(path, json.dumps(data, indent=indent) + "\n")


@contextlib.contextmanager
def atomic_outputs[K](
    paths: Mapping[K, str | Path], suffix: str = ".tmp"
) -> Iterator[dict[K, Path]]:
    """Yield temporary paths for several files; on success rename them over their targets.

    The renames happen together, in the order of ``paths``, once every file is written;
    a temporary left empty is not renamed (a writer may skip an optional file). On any
    exception no target changes and every temporary is removed.
    """
    targets = {k: Path(p) for k, p in paths.items()}
    tmps: dict[K, Path] = {}
    try:
        for key, path in targets.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
            os.close(fd)
            tmps[key] = Path(name)
        yield dict(tmps)
        for key, tmp in tmps.items():
            if tmp.stat().st_size:
                os.chmod(tmp, umask_mode())
                os.replace(tmp, targets[key])
    except OSError as exc:
        if is_write_error(exc):
            raise write_error(Path(exc.filename or next(iter(targets.values()))), exc) from None
        raise
    finally:
        for tmp in tmps.values():
            tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a hidden temporary folder beside ``path``; on success it replaces ``path``.

    An existing ``path`` is moved aside first and deleted only once the new folder is in
    place (it is put back if the rename fails). On any exception the temporary folder is
    removed and ``path`` is left as it was.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    except OSError as exc:
        if is_write_error(exc):
            raise write_error(path, exc) from None
        raise
    old = None
    try:
        yield stage
        stage.chmod(umask_mode(directory=True))
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
            os.replace(path, old / path.name)
        os.replace(stage, path)
    except BaseException as exc:
        shutil.rmtree(stage, ignore_errors=True)
        if old is not None and (old / path.name).exists() and not path.exists():
            os.replace(old / path.name, path)
        if isinstance(exc, OSError) and is_write_error(exc):
            raise write_error(path, exc) from None
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
