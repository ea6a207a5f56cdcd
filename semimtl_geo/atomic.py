"""Write files under a temporary name in the target folder, then rename (never half-written).

The one implementation of the temporary-name-then-rename pattern: single files
(:func:`atomic_output`, :func:`atomic_write_text`, :func:`atomic_write_json`), several
files committed together (:func:`atomic_outputs`, on :func:`replace_files`, which also
publishes files staged elsewhere, as ``predict``'s output sets are) and whole folders
(:func:`atomic_dir`, on the hidden folders of :func:`hidden_dir`).
``tempfile.mkstemp``/``mkdtemp`` create private 0600/0700 entries; outputs get the
permissions a plainly created file or folder would have (``0666``/``0777 & ~umask``)
before they are renamed into place.
"""

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from semimtl_geo.outputs import is_write_error, write_error


def umask_mode(directory: bool = False) -> int:
    """Return the permissions a plainly created file (or folder) gets under the umask."""
    mask = os.umask(0)
    os.umask(mask)
    return (0o777 if directory else 0o666) & ~mask


def hidden_dir(parent: str | Path, prefix: str, target: str | Path | None = None) -> Path:
    """Create a new hidden folder ``<prefix><random>`` in ``parent`` (and ``parent`` itself).

    The folder gets the permissions a plainly created folder would have. A failure caused
    by the location raises a one-sentence :class:`~semimtl_geo.errors.UserError` naming
    ``target`` (default: ``parent``).
    """
    parent = Path(parent)
    try:
        parent.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
        folder.chmod(umask_mode(directory=True))
    except OSError as exc:
        if is_write_error(exc):
            raise write_error(Path(target) if target is not None else parent, exc) from None
        raise
    return folder


def replace_files(
    moves: Iterable[tuple[str | Path, str | Path]],
    remove: Iterable[str | Path] = (),
    backup_prefix: str = ".replaced-",
) -> list[Path]:
    """Rename staged files over their final names as one step: all of them or none.

    1. every final name that exists, and every path of ``remove``, gets a hard link in a
       hidden backup folder (``<backup_prefix><random>``) beside it (it is moved there
       instead where the file system has no hard links);
    2. each staged file is renamed over its final name (``os.replace``: a final name
       always holds a complete file, old or new);
    3. the paths of ``remove`` that are not final names are deleted;
    4. the backup folders are deleted.

    If a step fails (Ctrl-C included), the files renamed so far are removed, the backups
    are put back and the exception propagates: no final name changes.

    Args:
        moves: ``(staged, final)`` pairs; staged files must be on the final's file system.
        remove: files that must not survive the replacement (an earlier version's extras).
        backup_prefix: name prefix of the backup folders (lets a cleaner recognise them).

    Returns:
        The final paths, in the order of ``moves``.

    """
    pairs = [(Path(staged), Path(final)) for staged, final in moves]
    finals = [final for _, final in pairs]
    keep = set(finals)
    backups: dict[Path, Path] = {}  # folder -> its backup folder
    saved: list[tuple[Path, Path, bool]] = []  # (path, backup copy, moved away)
    placed: list[Path] = []
    try:
        for old in dict.fromkeys([*finals, *map(Path, remove)]):
            if not os.path.lexists(old):
                continue
            if old.parent not in backups:
                backups[old.parent] = Path(tempfile.mkdtemp(prefix=backup_prefix, dir=old.parent))
            copy = backups[old.parent] / old.name
            try:
                os.link(old, copy, follow_symlinks=False)
                saved.append((old, copy, False))
            except OSError:  # no hard links here (FAT, some network shares): move it
                os.replace(old, copy)
                saved.append((old, copy, True))
        for staged, final in pairs:
            os.replace(staged, final)
            placed.append(final)
        for old, _, moved in saved:
            if old not in keep and not moved:
                old.unlink(missing_ok=True)
    except BaseException:
        for final in placed:
            final.unlink(missing_ok=True)
        for old, copy, _ in saved:
            if os.path.lexists(copy):
                os.replace(copy, old)
        raise
    finally:
        for backup in backups.values():
            shutil.rmtree(backup, ignore_errors=True)
    return finals


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

    The renames happen together (:func:`replace_files`: all or none), in the order of
    ``paths``, once every file is written; a temporary left empty is not renamed (a writer
    may skip an optional file). On any exception no target changes and every temporary is
    removed.
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
        written = [(tmp, targets[key]) for key, tmp in tmps.items() if tmp.stat().st_size]
        for tmp, _ in written:
            os.chmod(tmp, umask_mode())
        replace_files(written)
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
    stage = hidden_dir(path.parent, f".{path.name}.", target=path)
    old = None
    try:
        yield stage
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
